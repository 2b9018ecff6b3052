// Anomaly scores over a process signal (second axis, right) with the machine's alarms as vertical markers.
import { get, iso } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

/** Scores of one signal and the machine's alarm activations (data time, ms) within [from, to). */
export async function scoresAndAlarms(siteId, machineId, signal, from, to) {
  const [scores, alarms] = await Promise.all([
    get("anomaly-scores", { site: siteId, machine: machineId, signal, from: iso(from), to: iso(to) }).catch(() => null),
    get("alarms", { site: siteId, machine: machineId, all: true }).catch(() => []),
  ]);
  const points = scores?.signals?.[0]?.points ?? [];
  const marks = alarms.filter((a) => a.raised_ts).map((a) => ({ ts: Date.parse(a.raised_ts), label: a.message,
    priority: a.priority })).filter((m) => m.ts >= from && m.ts < to);
  return { points, marks };
}

/** The signal (left axis) and its anomaly score (right axis, same time axis), alarms drawn as markers. */
export function signalChart(el, ts, values, label, unit, points, marks) {
  el.replaceChildren();
  if (!ts.length) {
    el.append(h("p", { class: "muted" }, t("no.data")));
    return null;
  }
  // One time axis: the score is placed on the signal's timestamps (nearest earlier score), null where none.
  const scoreAt = new Array(ts.length).fill(null);
  let j = 0;
  for (let i = 0; i < ts.length; i++) {
    while (j + 1 < points.length && points[j + 1][0] <= ts[i]) j++;
    if (points.length && points[j][0] <= ts[i] && ts[i] - points[j][0] < 60_000) scoreAt[i] = points[j][1];
  }
  const grid = { stroke: css("--grid"), width: 1 };
  const axis = { stroke: css("--muted"), grid, ticks: grid };
  const drawMarks = (u) => {
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = css("--poor");
    ctx.lineWidth = 2;
    for (const m of marks) {
      const x = u.valToPos(m.ts / 1000, "x", true);
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
    }
    ctx.restore();
  };
  const chart = new uPlot({
    width: Math.max(200, el.clientWidth), height: Math.max(150, (el.clientHeight || 170) - 4),
    legend: { show: false },
    scales: { x: { time: true }, score: { range: (u, lo, hi) => [0, Math.max(1, hi ?? 1)] } },
    axes: [axis, { ...axis, label: unit || undefined, size: 56 },
      { ...axis, side: 1, scale: "score", label: t("anomaly.score"), grid: { show: false }, size: 48 }],
    series: [{}, { label, stroke: css("--accent"), width: 1.5, points: { show: false } },
      { label: t("anomaly.score"), scale: "score", stroke: css("--fair"), width: 1, points: { show: false } }],
    hooks: { draw: [drawMarks] },
  }, [ts.map((v) => v / 1000), values, scoreAt], el);
  el.dataset.scorePoints = String(scoreAt.filter((v) => v !== null).length);
  el.dataset.alarmMarks = String(marks.length);
  el.setAttribute("aria-label", `${label}: ${t("anomaly.with.scores", { marks: marks.length })}`);
  return chart;
}
