// OEE targets per line (GET targets, GET sites/S/lines/L/target) shown against the actuals.
import { getOr } from "./api.js";
import { h } from "./dom.js";
import { pct } from "./format.js";
import { currentLang, t } from "./i18n.js";

/** Every line's target and current-shift actuals the token sees, grouped by site; empty when the route is not there. */
export async function targetsBySite() {
  const rows = await getOr("targets", {}, []);
  const out = new Map();
  for (const r of rows) {
    if (!out.has(r.site)) out.set(r.site, []);
    out.get(r.site).push(r);
  }
  return out;
}

const nameOf = (r) => (currentLang() === "zh-CN" && r.name_zh ? r.name_zh : r.name || r.line);

/** "Target 75.0 % · below target (−1.8 pts)": an actual `w` (an OEE window) against a target; null without one. */
export function targetNote(target, w) {
  if (!target) return null;
  const oee = w?.oee;
  const parts = [t("target.oee", { value: pct(target.oee) })];
  let state = "none";
  if (oee !== null && oee !== undefined && !w?.no_output) {
    state = oee >= target.oee ? "met" : "missed";
    const pts = ((oee - target.oee) * 100).toFixed(1);
    parts.push(t(state === "met" ? "target.met.by" : "target.missed.by", { pts: pts.replace("-", "−") }));
  }
  return h("p", { class: `target-note target-${state}`, dataset: { target: target.oee } }, parts.join(" · "));
}

/** A site card's list: each line with a target, its current-shift OEE, the target and met / missed in words. */
export function targetList(rows) {
  const withTarget = (rows ?? []).filter((r) => r.target);
  if (!withTarget.length) return null;
  return h("ul", { class: "target-list", "aria-label": t("target.lines") },
    ...withTarget.map((r) => {
      const state = r.on_target === null ? "none" : r.on_target ? "met" : "missed";
      return h("li", { class: `target-${state}`, dataset: { line: r.line } },
        h("span", { class: "target-name" }, nameOf(r)),
        h("span", { class: "target-val" }, `${pct(r.current?.oee)} / ${pct(r.target.oee)}`),
        h("span", { class: "target-state" }, t(`target.${state}`)));
    }));
}
