// Cluster overview: the cluster's OEE, then a card per site with OEE, A/P/Q and its 24 h trend.
import { get } from "../api.js";
import { apq, sparkline, updateApq } from "../charts.js";
import { oeeSummary, throttled } from "../data.js";
import { h } from "../dom.js";
import { count } from "../format.js";
import { t } from "../i18n.js";
import { targetList, targetsBySite } from "../targets.js";

function card({ title, href, meta, summary, dataset, cls = "" }) {
  const spark = h("div", { class: "spark" });
  const el = h("article", { class: `card summary-card ${cls}`, dataset },
    h("header", { class: "card-head" },
      h("h2", {}, href ? h("a", { class: "stretch", href }, title) : title),
      meta ? h("span", { class: "muted small" }, meta) : null),
    h("p", { class: "small muted caption" }, summary.current ? t("current.shift") : t("no.oee")),
    apq(summary.current),
    h("p", { class: "small muted caption" }, t("trend.24h")),
    spark);
  return { el, spark };
}

export async function overview(ctx) {
  ctx.crumbs([]);
  const sites = await get("sites");
  const [targets, cluster, ...perSite] = await Promise.all([
    targetsBySite(),
    oeeSummary("cluster", null, "cluster"),
    ...sites.map((s) => oeeSummary("site", s.site_id, s.site_id)),
  ]);
  if (!ctx.current()) return;
  const top = card({ title: t("cluster.title"), summary: cluster, meta: count(sites.length, "site"),
    dataset: { scope: "cluster", id: "cluster" }, cls: "cluster-card" });
  const cards = sites.map((s, i) => ({ ...card({
    title: s.name || s.site_id, href: `#/site/${encodeURIComponent(s.site_id)}`,
    meta: `${count(s.lines, "line")} · ${count(s.machines, "machine")}`, summary: perSite[i],
    dataset: { scope: "site", id: s.site_id, site: s.site_id } }), summary: perSite[i] }));
  // Lines with an OEE target: current shift against the target, per site card.
  cards.forEach((c, i) => c.el.append(targetList(targets.get(sites[i].site_id)) ?? ""));
  ctx.show(h("section", { class: "overview", "aria-labelledby": "ov-title" },
    h("h1", { id: "ov-title", class: "visually-hidden" }, t("cluster")),
    top.el,
    h("div", { class: "grid sites" }, ...cards.map((c) => c.el))));
  sparkline(top.spark, cluster.trend);
  cards.forEach((c) => sparkline(c.spark, c.summary.trend));
  // Machine OEE updates arrive live; the site and cluster figures are re-read from the API, at most every 10 s.
  const refresh = throttled(10_000);
  ctx.onLeave(refresh.cancel);
  const reload = async (scope, site, id) => {
    const summary = await oeeSummary(scope, site, id);
    const el = ctx.view.querySelector(`[data-scope="${scope}"][data-id="${CSS.escape(id)}"]`);
    if (!ctx.current() || !el) return;
    updateApq(el.querySelector(".apq"), summary.current);
    sparkline(el.querySelector(".spark"), summary.trend);
  };
  ctx.live((kind, data) => {
    if (kind !== "oee" || data.window_kind !== "shift") return;
    if (data.scope === "site" || data.scope === "cluster") {
      const el = ctx.view.querySelector(`[data-scope="${CSS.escape(data.scope)}"][data-id="${CSS.escape(data.id)}"]`);
      updateApq(el?.querySelector(".apq"), data);
      return;
    }
    refresh(`site/${data.site}`, () => reload("site", data.site, data.site));
    refresh("cluster", () => reload("cluster", null, "cluster"));
  });
}
