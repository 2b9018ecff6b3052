// Machine page: current state, OEE with A/P/Q, counters, state timeline (with the stops that need a reason, for
// operators), six big losses, stop-reason pareto and one process signal's last hour.
import { get, getOr, iso } from "../api.js";
import { scoresAndAlarms, signalChart } from "../anomaly.js";
import { apq, bars, legend, timeline, updateApq } from "../charts.js";
import { latest, may, me, newest, oeeWindows, throttled } from "../data.js";
import { h } from "../dom.js";
import { category, clock, label, num, stateName } from "../format.js";
import { t } from "../i18n.js";
import { commandPanel } from "./commands.js";
import { stopsPanel } from "./stops.js";

const HOUR = 3600_000;
const LOSSES = ["equipment_failure_s", "setup_adjustment_s", "idling_minor_stops_s", "reduced_speed_s",
  "process_defects_s", "startup_rejects_s"];
// Machine metrics with their own panels; everything else numeric is a process signal.
const OWN = /^(State|StopReason|Counts\/|Rate\/)/;

function stateBadge(code, since) {
  const cat = code === null || code === undefined ? "unknown" : category(undefined, code);
  return h("div", { class: `state-badge cat-${cat}`, id: "state", dataset: { stateCode: code ?? "" } },
    h("span", { class: "state-name" }, stateName(code)),
    h("span", { class: "state-since" }, since ? t("state.since", { time: clock(since) }) : ""));
}

function counters(w, values) {
  const item = (key, value, unit) => h("div", {}, h("dt", {}, t(key)), h("dd", {}, num(value), unit ? h("small", {}, unit) : null));
  const total = w?.total ?? null;
  const good = w?.good ?? null;
  return h("dl", { class: "counters", id: "counters" },
    item("total", total), item("good", good),
    item("rejects", total !== null && good !== null ? total - good : null),
    item("rate.current", values.get("Rate/Current")?.value, t("per.min")),
    item("rate.ideal", values.get("Rate/Ideal")?.value, t("per.min")));
}

/** What the page shows that a stop reason changes: the timeline, the current shift and its losses. */
async function figures(siteId, machineId) {
  const now = Date.now();
  const from = now - 8 * HOUR;
  const [shifts, states] = await Promise.all([
    oeeWindows("machine", siteId, machineId, "shift", 12),
    getOr("states", { site: siteId, machine: machineId, from: iso(from), to: iso(now) }, []),
  ]);
  const current = newest(shifts);
  const shiftStart = current ? Date.parse(current.start) : from;
  const losses = await getOr("losses", { scope: "machine", site: siteId, id: machineId,
    from: iso(shiftStart), to: iso(now) }, null);
  return { now, from, current, states, losses };
}

const paretoRows = (losses) => (losses?.pareto ?? []).slice(0, 6).map((r) => ({ label: stateName(r.code),
  seconds: r.seconds, note: t("pareto.count", { count: r.count }), cls: `cat-${category(r.category, r.code)}` }));
const lossRows = (losses) => LOSSES.map((k) => ({ label: t(`loss.${k}`), seconds: losses?.six_big_losses?.[k] ?? 0 }));

export async function machine(ctx, siteId, machineId) {
  const site = encodeURIComponent(siteId);
  const [siteDetail, detail, initialValues, who, first] = await Promise.all([
    get(`sites/${site}`),
    get(`sites/${site}/machines/${encodeURIComponent(machineId)}`),
    latest(siteId, machineId),
    me().catch(() => null),
    figures(siteId, machineId),
  ]);
  // Giving a stop a reason is for operators and above; a viewer sees neither the list nor the form.
  const reasons = may(who, "operator") ? await getOr(`sites/${site}/stop-reasons`, {}, []) : null;
  if (!ctx.current()) return;
  ctx.crumbs([[siteDetail.name || siteId, `#/site/${site}`],
    [label(siteDetail.line_list?.find((l) => l.line_id === detail.line_id), detail.line_id),
     `#/site/${site}/line/${encodeURIComponent(detail.line_id)}`], [label(detail, machineId)]]);

  let values = initialValues;
  let { from, now, current } = first;
  let intervals = [...first.states];
  const last = intervals.at(-1);
  const code = values.get("State")?.value ?? last?.code ?? null;
  const since = last && last.code === code ? Date.parse(last.start) : null;
  const signals = detail.tags.filter((tag) => !OWN.test(tag.name) && tag.datatype <= 11);
  const timelineEl = h("div", { class: "timeline", id: "timeline" });
  const chartEl = h("div", { class: "signal-chart" });
  const picker = h("select", { id: "signal", "aria-label": t("signal.pick") },
    ...signals.map((tag) => h("option", { value: tag.tag_id }, tag.name + (tag.unit ? ` (${tag.unit})` : ""))));
  const lossesEl = h("div", { class: "card m-losses" }, h("h2", { class: "card-title" }, t("losses")),
    bars(lossRows(first.losses)));
  const paretoEl = h("div", { class: "card m-pareto", id: "pareto" }, h("h2", { class: "card-title" }, t("pareto")),
    bars(paretoRows(first.losses)));
  const panel = reasons === null ? null : stopsPanel({ siteId, machineId, reasons,
    onPicked: () => paintTimeline(), onSaved: reread });

  ctx.show(h("section", { class: "machine-page" },
    h("div", { class: "card m-state" },
      h("h1", { class: "page-title", title: machineId }, label(detail, machineId)), stateBadge(code, since)),
    h("div", { class: "card m-oee", dataset: { scope: "machine", id: machineId } },
      h("h2", { class: "card-title" }, t("current.shift")), apq(current)),
    h("div", { class: "card m-counters" }, h("h2", { class: "card-title" }, t("counters")), counters(current, values)),
    h("div", { class: "card m-timeline" }, h("h2", { class: "card-title" }, t("state.timeline")), timelineEl, legend(),
      panel?.el),
    lossesEl, paretoEl,
    h("div", { class: "card m-signal" },
      h("div", { class: "card-head" }, h("h2", { class: "card-title" }, t("signal")), signals.length ? picker : null),
      signals.length ? chartEl : h("p", { class: "muted" }, t("signal.none")))));

  function paintTimeline() {
    const marks = panel ? panel.update(intervals) : [];
    timeline(timelineEl, intervals, from, now, panel ? { marks, picked: panel.picked(), onPick: (m) => panel.pick(m.key) } : {});
  }

  /** After a stop reason: the timeline, the A/P/Q and counters, the losses and the pareto, read again. */
  async function reread() {
    const [f, fresh] = await Promise.all([figures(siteId, machineId), latest(siteId, machineId)]);
    if (!ctx.current()) return;
    ({ from, now, current } = f);
    values = fresh;
    intervals = [...f.states];
    paintTimeline();
    updateApq(ctx.view.querySelector(".m-oee .apq"), current);
    ctx.view.querySelector("#counters")?.replaceWith(counters(current, values));
    lossesEl.replaceChildren(lossesEl.firstChild, bars(lossRows(f.losses)));
    paretoEl.replaceChildren(paretoEl.firstChild, bars(paretoRows(f.losses)));
  }

  paintTimeline();
  // The signal's last hour with its anomaly score (right axis) and the machine's alarms as markers.
  let signalPlot = null;
  ctx.onLeave(() => signalPlot?.destroy());
  // Remote commands, for the roles the machine's agent allows (loads beside the rest of the page).
  commandPanel({ siteId, machineId, who, onLeave: ctx.onLeave }).then((el) => {
    if (el && ctx.current()) ctx.view.querySelector(".machine-page")?.append(el);
  });
  const showSignal = async () => {
    const tag = signals.find((s) => String(s.tag_id) === picker.value);
    if (!tag) return;
    const end = Date.now();
    const [res, anomaly] = await Promise.all([
      get("series", { tag_id: tag.tag_id, start: end - HOUR, end, bucket: "10s", agg: "avg" }),
      scoresAndAlarms(siteId, machineId, tag.name, end - HOUR, end + 60_000)]);
    if (!ctx.current()) return;
    const pts = res.points;
    const keep = pts.avg.map((v, i) => [pts.ts[i], v]).filter(([, v]) => v !== null);
    signalPlot?.destroy();
    signalPlot = signalChart(chartEl, keep.map(([ts]) => ts), keep.map(([, v]) => v), tag.name, tag.unit,
      anomaly.points, anomaly.marks);
  };
  picker.addEventListener("change", showSignal);
  if (signals.length) await showSignal();

  const refresh = throttled(5_000);
  ctx.onLeave(refresh.cancel);
  ctx.live((kind, data) => {
    // New scores or an alarm of this machine: redraw the signal with its score and markers (at most every 5 s).
    if ((kind === "anomaly" && data.site === siteId && data.machine === machineId)
        || (kind === "alarm" && data.alarm?.site === siteId && data.alarm?.machine === machineId)) {
      if (signals.length) refresh("signal", showSignal);
      return;
    }
    if (kind === "anomaly" || kind === "alarm") return;
    if (data.site !== siteId || (kind === "state" ? data.machine !== machineId : data.id !== machineId)) return;
    if (kind === "state") {
      const ts = typeof data.ts === "number" ? data.ts : Date.parse(data.ts);
      const badge = stateBadge(data.code, ts);
      badge.classList.add("flash");
      ctx.view.querySelector("#state")?.replaceWith(badge);
      const open = intervals.at(-1);
      if (open && !open.end) open.end = iso(ts);
      intervals.push({ start: iso(ts), end: null, code: data.code, category: data.category });
      now = Date.now();
      from = now - 8 * HOUR;
      paintTimeline();
    } else if (kind === "oee" && data.scope === "machine" && data.window_kind === "shift") {
      updateApq(ctx.view.querySelector(".m-oee .apq"), data);
      if ("total" in data) ctx.view.querySelector("#counters")?.replaceWith(counters(data, values));
      else refresh("counters", refreshCounters); // the event carries ratios only: counts come from the API
    }
  });
  async function refreshCounters() {
    const [windows, fresh] = await Promise.all([oeeWindows("machine", siteId, machineId, "shift", 12),
      latest(siteId, machineId)]);
    if (ctx.current()) ctx.view.querySelector("#counters")?.replaceWith(counters(newest(windows), fresh));
  }
}
