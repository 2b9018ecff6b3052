// Line page: a card per machine with its state, OEE with A/P/Q and counters of the current shift.
import { get, getOr } from "../api.js";
import { apq, updateApq } from "../charts.js";
import { latest, oeeSummary, throttled } from "../data.js";
import { h } from "../dom.js";
import { label, num } from "../format.js";
import { t } from "../i18n.js";
import { targetNote } from "../targets.js";
import { followStates, stateChip } from "./site.js";

function miniCounters(w) {
  return h("dl", { class: "mini-counters" },
    h("div", {}, h("dt", {}, t("total")), h("dd", {}, num(w?.total))),
    h("div", {}, h("dt", {}, t("good")), h("dd", {}, num(w?.good))));
}

export async function line(ctx, siteId, lineId) {
  const [siteDetail, detail, values] = await Promise.all([
    get(`sites/${encodeURIComponent(siteId)}`),
    get(`sites/${encodeURIComponent(siteId)}/lines/${encodeURIComponent(lineId)}`),
    latest(siteId),
  ]);
  const summaries = await Promise.all(detail.machine_list.map((m) => oeeSummary("machine", siteId, m.machine_id)));
  if (!ctx.current()) return;
  ctx.crumbs([[siteDetail.name || siteId, `#/site/${encodeURIComponent(siteId)}`], [label(detail, lineId)]]);
  const [lineSummary, target] = await Promise.all([oeeSummary("line", siteId, lineId),
    getOr(`sites/${encodeURIComponent(siteId)}/lines/${encodeURIComponent(lineId)}/target`, {}, null)]);
  if (!ctx.current()) return;
  // The newest finished shift's report of this line.
  const reportLink = h("a", { class: "btn", id: "report-link",
    href: `#/site/${encodeURIComponent(siteId)}/line/${encodeURIComponent(lineId)}/report` }, t("rep.title"));
  const cards = detail.machine_list.map((m, i) => {
    const w = summaries[i].current;
    return h("article", { class: "card machine-card", dataset: { scope: "machine", id: m.machine_id } },
      h("header", { class: "card-head" },
        h("h2", { title: m.machine_id },
          h("a", { href: `#/site/${encodeURIComponent(siteId)}/machine/${encodeURIComponent(m.machine_id)}` },
            label(m, m.machine_id)))),
      stateChip(siteId, m.machine_id, values.get(`${m.machine_id}/State`)?.value ?? null),
      apq(w, { big: false }),
      miniCounters(w));
  });
  ctx.show(h("section", { class: "line" },
    h("div", { class: "line-head card", dataset: { scope: "line", id: lineId } },
      h("h1", { class: "page-title", title: lineId }, label(detail, lineId)),
      h("p", { class: "small muted caption" }, lineSummary.current ? t("current.shift") : t("no.oee")),
      apq(lineSummary.current, { big: false }),
      targetNote(target?.target, lineSummary.current), reportLink),
    h("div", { class: "grid machines" }, ...cards)));
  followStates(ctx, siteId);
  const machines = new Set(detail.machine_list.map((m) => m.machine_id));
  const refresh = throttled(10_000);
  ctx.onLeave(refresh.cancel);
  ctx.live((kind, data) => {
    if (kind !== "oee" || data.window_kind !== "shift" || data.site !== siteId) return;
    if (data.scope === "machine" && machines.has(data.id)) {
      const card = ctx.view.querySelector(`[data-scope="machine"][data-id="${CSS.escape(data.id)}"]`);
      updateApq(card?.querySelector(".apq"), data);
      refresh(`m/${data.id}`, async () => {
        const summary = await oeeSummary("machine", siteId, data.id);
        if (ctx.current()) card?.querySelector(".mini-counters")?.replaceWith(miniCounters(summary.current));
      });
      refresh("line", async () => {
        const summary = await oeeSummary("line", siteId, lineId);
        if (!ctx.current()) return;
        updateApq(ctx.view.querySelector(".line-head .apq"), summary.current);
        ctx.view.querySelector(".line-head .target-note")?.replaceWith(targetNote(target?.target, summary.current));
      });
    } else if (data.scope === "line" && data.id === lineId) {
      updateApq(ctx.view.querySelector(".line-head .apq"), data);
    }
  });
}
