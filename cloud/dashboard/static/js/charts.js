// Charts: uPlot (from its PyPI package, global `uPlot`) for time series; small SVG/HTML for the rest.
import { h, s } from "./dom.js";
import { CATEGORIES, category, clock, duration, num, pct, stateName, band } from "./format.js";
import { t } from "./i18n.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** A/P/Q as three labelled bars plus the OEE figure; `data-k` lets live updates find each number. */
export function apq(w, { big = true } = {}) {
  const row = (key, value) => h("div", { class: "apq-row", dataset: { k: key } },
    h("span", { class: "apq-name", title: t(key === "a" ? "availability" : key === "p" ? "performance" : "quality") },
      t(key)),
    h("span", { class: "apq-bar", role: "img", "aria-label": `${t(key)} ${pct(value)}` },
      h("span", { class: "apq-fill", style: `width:${Math.min(100, (value ?? 0) * 100).toFixed(1)}%` })),
    h("span", { class: "apq-val" }, pct(value)));
  // A machine that ran but has not completed a unit yet in this window: say so, not a red "0.0 %".
  const pending = Boolean(w?.no_output);
  return h("div", { class: `apq ${big ? "apq-big" : ""}` },
    h("div", { class: `oee-figure band-${pending ? "none" : band(w?.oee)}`, dataset: { k: "oee" } },
      h("span", { class: "oee-label" }, t("oee")), h("span", { class: "oee-val" }, pending ? "—" : pct(w?.oee)),
      pending ? h("span", { class: "oee-note small muted" }, t("no.unit.yet")) : null),
    h("div", { class: "apq-rows" }, row("a", w?.availability), row("p", w?.performance), row("q", w?.quality)));
}

/** Replace an A/P/Q block's figures in place (live update). */
export function updateApq(el, w) {
  if (!el) return;
  const fresh = apq(w, { big: el.classList.contains("apq-big") });
  el.replaceWith(fresh);
  fresh.classList.add("flash");
}

const charts = new Set();
const owners = new WeakMap();

/** Destroy the chart that lives in `el`, if any (before drawing a new one there). */
function forget(el) {
  const old = owners.get(el);
  if (old) {
    old.destroy();
    charts.delete(old);
  }
}

/** Destroy the uPlot instances of the previous page. */
export function disposeCharts() {
  for (const c of charts) c.destroy();
  charts.clear();
}

/** The OEE trend of hour windows as a small line chart (0..100 %). */
export function sparkline(el, windows, height = 56) {
  forget(el);
  el.replaceChildren();
  const pts = windows.filter((w) => w.oee !== null && w.oee !== undefined);
  if (pts.length < 2) {
    el.append(h("p", { class: "muted small" }, t("no.data")));
    return;
  }
  const x = pts.map((w) => Date.parse(w.start) / 1000);
  const y = pts.map((w) => w.oee * 100);
  const chart = new uPlot({
    width: Math.max(120, el.clientWidth), height,
    legend: { show: false }, cursor: { show: false }, select: { show: false },
    scales: { x: { time: true }, y: { range: [0, 100] } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: css("--accent"), width: 2, fill: css("--accent-soft"), points: { show: false } }],
  }, [x, y], el);
  owners.set(el, chart);
  el.setAttribute("role", "img");
  el.setAttribute("aria-label", `${t("trend.24h")}: ${y.map((v) => v.toFixed(0)).join(", ")} %`);
  charts.add(chart);
}

/** One tag's values over time, sized to its container. */
export function lineChart(el, ts, values, label, unit) {
  forget(el);
  el.replaceChildren();
  if (!ts.length) {
    el.append(h("p", { class: "muted" }, t("no.data")));
    return;
  }
  const grid = { stroke: css("--grid"), width: 1 };
  const axis = { stroke: css("--muted"), grid, ticks: grid };
  const chart = new uPlot({
    width: Math.max(200, el.clientWidth), height: Math.max(150, (el.clientHeight || 170) - 4),
    legend: { show: false },
    scales: { x: { time: true } },
    axes: [axis, { ...axis, label: unit || undefined, size: 56 }],
    series: [{}, { label, stroke: css("--accent"), width: 1.5, points: { show: false } }],
  }, [ts.map((v) => v / 1000), values], el);
  owners.set(el, chart);
  charts.add(chart);
}

/** State intervals as coloured bands over [from, to) with hour ticks; each band has a tooltip.

`marks` ({key, start, end, label}) are outlined over the bands as buttons that call `onPick(mark)`; the one
whose key is `picked` is highlighted. They stay out of the tab order: a list next to the chart is the keyboard way.
*/
export function timeline(el, intervals, from, to, { marks = [], picked = null, onPick = null } = {}) {
  const width = 1000;
  const height = 46;
  const span = to - from;
  const x = (ms) => ((Math.min(Math.max(ms, from), to) - from) / span) * width;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "timeline-svg",
    role: "img", "aria-label": t("state.timeline") });
  svg.append(s("rect", { x: 0, y: 0, width, height: 30, class: "tl-empty" }));
  for (const iv of intervals) {
    const start = Date.parse(iv.start);
    const end = iv.end ? Date.parse(iv.end) : to;
    if (end <= from || start >= to) continue;
    const cat = category(iv.category, iv.code);
    const rect = s("rect", { x: x(start), y: 0, width: Math.max(0.5, x(end) - x(start)), height: 30,
      class: `cat-${cat}` }, s("title", {}, `${clock(start)}–${clock(end)} ${stateName(iv.code)}${iv.reason ? ` · ${iv.reason}` : ""}`));
    svg.append(rect);
  }
  const hour = 3600_000;
  for (let tick = Math.ceil(from / hour) * hour; tick < to; tick += hour) {
    svg.append(s("line", { x1: x(tick), x2: x(tick), y1: 30, y2: 34, class: "tl-tick" }));
  }
  const layer = onPick ? h("div", { class: "tl-marks" }, ...marks.map((m) => {
    const left = x(Date.parse(m.start)) / 10;
    const right = x(m.end ? Date.parse(m.end) : to) / 10;
    return h("button", { type: "button", tabindex: "-1", class: `tl-mark${m.key === picked ? " picked" : ""}`,
      title: m.label, "aria-label": m.label, dataset: { key: m.key },
      style: `left:${((left + right) / 2).toFixed(3)}%;width:max(14px,${(right - left).toFixed(3)}%)`,
      onclick: () => onPick(m) });
  })) : null;
  el.replaceChildren(svg, layer, h("div", { class: "tl-axis", "aria-hidden": "true" },
    ...hourLabels(from, to).map(([ms, text]) => h("span", { style: `left:${((ms - from) / span) * 100}%` }, text))));
}

function hourLabels(from, to) {
  const out = [];
  const step = 2 * 3600_000;
  for (let tick = Math.ceil(from / step) * step; tick < to; tick += step) out.push([tick, clock(tick)]);
  return out;
}

/** The legend of state categories. */
export function legend() {
  return h("ul", { class: "legend" }, ...CATEGORIES.filter((c) => c !== "unknown").map((c) =>
    h("li", {}, h("span", { class: `swatch cat-${c}`, "aria-hidden": "true" }), t(`cat.${c}`))));
}

/** Horizontal bars, longest first: [{label, seconds, note}]. */
export function bars(rows, { empty = t("no.data") } = {}) {
  const max = Math.max(0, ...rows.map((r) => r.seconds));
  if (!rows.length || max <= 0) return h("p", { class: "muted" }, empty);
  return h("ul", { class: "bars" }, ...rows.map((r) => h("li", {},
    h("span", { class: "bar-label", title: r.label }, r.label),
    h("span", { class: "bar-track", "aria-hidden": "true" },
      h("span", { class: `bar-fill ${r.cls ?? ""}`, style: `width:${((r.seconds / max) * 100).toFixed(1)}%` })),
    h("span", { class: "bar-val" }, duration(r.seconds), r.note ? h("span", { class: "muted" }, ` ${r.note}`) : null))));
}

export { num };
