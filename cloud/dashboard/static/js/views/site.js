// Site page: a card per line with OEE, A/P/Q, trend and its machines' current states; a link to the shift
// calendar for engineers.
import { get } from "../api.js";
import { apq, sparkline, updateApq } from "../charts.js";
import { latest, may, me, oeeSummary, throttled } from "../data.js";
import { h } from "../dom.js";
import { category, count, label, stateName } from "../format.js";
import { t } from "../i18n.js";

/** A link chip showing a machine's current state; live updates find it by data-machine. */
export function stateChip(site, machine, code) {
  const chip = h("a", { class: "chip", href: `#/site/${encodeURIComponent(site)}/machine/${encodeURIComponent(machine)}`,
    dataset: { machine } }, h("span", { class: "chip-id" }, machine), h("span", { class: "chip-state" }));
  setChip(chip, code);
  return chip;
}

export function setChip(chip, code, flash = false) {
  const cat = code === null || code === undefined ? "unknown" : category(undefined, code);
  chip.className = `chip cat-${cat}`;
  chip.dataset.stateCode = code ?? "";
  chip.querySelector(".chip-state").textContent = stateName(code);
  if (flash) chip.classList.add("flash");
}

/** Live state events update the chips on the page. */
export function followStates(ctx, site) {
  ctx.live((kind, data) => {
    if (kind !== "state" || data.site !== site) return;
    for (const chip of ctx.view.querySelectorAll(`.chip[data-machine="${CSS.escape(data.machine)}"]`)) {
      setChip(chip, data.code, true);
    }
  });
}

export async function site(ctx, siteId) {
  const [detail, values, who] = await Promise.all([get(`sites/${encodeURIComponent(siteId)}`), latest(siteId),
    me().catch(() => null)]);
  const summaries = await Promise.all(detail.line_list.map((l) => oeeSummary("line", siteId, l.line_id)));
  if (!ctx.current()) return;
  ctx.crumbs([[detail.name || siteId]]);
  const cards = detail.line_list.map((line, i) => {
    const spark = h("div", { class: "spark" });
    const href = `#/site/${encodeURIComponent(siteId)}/line/${encodeURIComponent(line.line_id)}`;
    const el = h("article", { class: "card summary-card", dataset: { scope: "line", id: line.line_id } },
      h("header", { class: "card-head" }, h("h2", { title: line.line_id }, h("a", { href }, label(line, line.line_id))),
        h("span", { class: `pill ${line.online ? "pill-on" : "pill-off"}` }, t(line.online ? "online" : "offline"))),
      h("p", { class: "small muted caption" }, summaries[i].current ? t("current.shift") : t("no.oee")),
      apq(summaries[i].current, { big: false }),
      spark,
      h("div", { class: "chips", "aria-label": t("machines"), role: "group" },
        ...line.machines.map((m) => stateChip(siteId, m, values.get(`${m}/State`)?.value ?? null))));
    return { el, spark, trend: summaries[i].trend };
  });
  // The shift calendar is edited by engineers and above; the page itself only reads for anyone else.
  const calendarLink = may(who, "engineer")
    ? h("a", { class: "btn", id: "calendar-link", href: `#/site/${encodeURIComponent(siteId)}/calendar` }, t("cal.title"))
    : null;
  ctx.show(h("section", { class: "site" },
    h("div", { class: "site-head" },
      h("h1", { class: "page-title" }, detail.name || siteId, h("span", { class: "muted small" },
        ` ${count(detail.lines, "line")} · ${count(detail.machines, "machine")}`)),
      h("div", { class: "form-actions" }, h("a", { class: "btn", id: "report-link",
        href: `#/site/${encodeURIComponent(siteId)}/report` }, t("rep.title")), calendarLink)),
    h("div", { class: "grid lines" }, ...cards.map((c) => c.el))));
  cards.forEach((c) => sparkline(c.spark, c.trend, 40));
  followStates(ctx, siteId);
  // Line figures: pushed when the service sends them, else re-read (at most every 10 s) after a machine's update.
  const lineOf = new Map(detail.line_list.flatMap((l) => l.machines.map((m) => [m, l.line_id])));
  const refresh = throttled(10_000);
  ctx.onLeave(refresh.cancel);
  ctx.live((kind, data) => {
    if (kind !== "oee" || data.window_kind !== "shift" || data.site !== siteId) return;
    const lineId = data.scope === "line" ? data.id : lineOf.get(data.id);
    if (!lineId) return;
    const card = ctx.view.querySelector(`[data-scope="line"][data-id="${CSS.escape(lineId)}"]`);
    if (data.scope === "line") {
      updateApq(card?.querySelector(".apq"), data);
      return;
    }
    refresh(lineId, async () => {
      const summary = await oeeSummary("line", siteId, lineId);
      if (!ctx.current() || !card) return;
      updateApq(card.querySelector(".apq"), summary.current);
      sparkline(card.querySelector(".spark"), summary.trend, 40);
    });
  });
}
