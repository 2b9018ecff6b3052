// Planning page (#/planning): the cluster's free capacity per capability and day (heat map) and the token's own
// lines, the order board (engineers create and cancel orders of their sites), the accepted plan as a Gantt chart
// per line across sites (changeovers hatched, due dates marked), and the newest proposal as a diff against the
// accepted plan, which a cluster planner accepts or rejects. What a site may not see the API does not send.
import { ApiError, get, send } from "../api.js";
import { me } from "../data.js";
import { h, s } from "../dom.js";
import { t } from "../i18n.js";

const HOUR = 3600_000;
const hours = (sec) => (sec / 3600).toFixed(1);
const plannerOf = (who) => (who.role === "cluster-planner" || who.role === "admin") && who.sites === null;
const engineerOf = (who) => ["engineer", "cluster-planner", "admin"].includes(who.role);
const when = (iso) => new Date(iso).toLocaleString(undefined, { month: "2-digit", day: "2-digit", hour: "2-digit",
  minute: "2-digit", hour12: false });

/** A table with rows = keys, columns = days, cells shaded by free / capacity. */
function heatMap(rows, keyOf, label, caption) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const keys = [...new Set(rows.map(keyOf))].sort();
  const cell = new Map(rows.map((r) => [`${keyOf(r)}|${r.day}`, r]));
  return h("table", { class: "heat", "aria-label": caption },
    h("caption", { class: "card-title" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, label),
      ...days.map((d) => h("th", { scope: "col" }, d.slice(5))))),
    h("tbody", {}, ...keys.map((k) => h("tr", {}, h("th", { scope: "row" }, k), ...days.map((d) => {
      const r = cell.get(`${k}|${d}`);
      if (!r || r.capacity_s <= 0) return h("td", { class: "heat-none" }, "–");
      const share = Math.max(0, Math.min(1, r.free_s / r.capacity_s));
      return h("td", { class: "heat-cell", style: `--free:${share.toFixed(2)}`, dataset: { free: r.free_s },
        title: t("plan.free.of", { free: hours(r.free_s), cap: hours(r.capacity_s) }) }, hours(r.free_s));
    })))));
}

function orderBoard(ctx, orders, model, who, plan) {
  const products = new Map(model.products.map((p) => [p.product_id, p]));
  const lots = new Map();
  for (const lot of plan?.lots ?? []) if (lot.order_id) lots.set(lot.order_id, [...(lots.get(lot.order_id) ?? []), lot]);
  const madeAt = (o) => [...new Set((lots.get(o.order_id) ?? []).map((l) => l.site_id))].join(", ") || "–";
  const arrives = (o) => {
    const mine = lots.get(o.order_id);
    if (!mine) return h("td", {}, "–");
    const last = Math.max(...mine.map((l) => Date.parse(l.arrival_ts)));
    const late = last > Date.parse(o.due);
    return h("td", { class: late ? "late-text" : "", dataset: { late: late ? "1" : "0" } }, when(new Date(last).toISOString()));
  };
  // Good units counted on the lines (the lots' production orders in the accepted plan), against the quantity.
  const made = (o) => {
    const mine = (lots.get(o.order_id) ?? []).filter((l) => l.po_status === "started" || l.po_status === "done");
    if (!mine.length) return h("td", { class: "num" }, "–");
    const n = mine.reduce((acc, l) => acc + (l.made ?? 0), 0);
    return h("td", { class: "num made", dataset: { made: String(Math.round(n)) } }, `${Math.round(n)} / ${o.quantity}`);
  };
  const board = h("table", { class: "orders", "aria-label": t("plan.orders") },
    h("thead", {}, h("tr", {}, ...["plan.order", "plan.site", "plan.product", "plan.qty", "plan.due", "plan.weight",
      "plan.status", "plan.made.at", "plan.made", "plan.arrives", ""].map((k) => h("th", { scope: "col" }, k ? t(k) : "")))),
    h("tbody", {}, ...orders.map((o) => h("tr", { dataset: { order: o.order_id } },
      h("td", {}, o.order_id), h("td", {}, o.site_id),
      h("td", { title: o.product_id }, products.get(o.product_id)?.name ?? o.product_id),
      h("td", { class: "num" }, o.quantity), h("td", {}, when(o.due)), h("td", { class: "num" }, o.weight),
      h("td", {}, t(`plan.status.${o.status}`)), h("td", {}, madeAt(o)), made(o), arrives(o),
      h("td", {}, engineerOf(who) && o.status === "open" ? h("button", { type: "button", class: "btn btn-small",
        onclick: async () => { await send("POST", `planning/orders/${encodeURIComponent(o.order_id)}/cancel`); ctx.rerender(); },
      }, t("plan.cancel")) : null)))));
  if (!engineerOf(who)) return h("div", {}, board);
  const sites = who.sites ?? [...new Set(model.lines.map((l) => l.site_id))];
  const msg = h("p", { class: "small", role: "status", "aria-live": "polite" });
  const form = h("form", { class: "order-form", "aria-label": t("plan.new.order") },
    h("select", { name: "site_id", "aria-label": t("plan.site") }, ...sites.map((x) => h("option", { value: x }, x))),
    h("select", { name: "product_id", "aria-label": t("plan.product") },
      ...model.products.map((p) => h("option", { value: p.product_id }, p.name))),
    h("input", { name: "quantity", inputmode: "decimal", "aria-label": t("plan.qty"), placeholder: t("plan.qty") }),
    h("input", { name: "due_h", inputmode: "decimal", "aria-label": t("plan.due.in"), placeholder: t("plan.due.in") }),
    h("button", { type: "submit", class: "btn btn-primary" }, t("plan.create")), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await send("POST", "planning/orders", { site_id: f.get("site_id"), product_id: f.get("product_id"),
        quantity: Number(f.get("quantity")), due: new Date(Date.now() + Number(f.get("due_h")) * HOUR).toISOString() });
      ctx.rerender();
    } catch (err) {
      msg.textContent = err instanceof ApiError ? err.message : String(err);
    }
  });
  return h("div", {}, board, form);
}

/** One row per line, lots as bars (changeover part hatched), a due-date tick per lot (red when late). */
function gantt(plan) {
  const lots = plan.lots.filter((l) => l.line_id !== null);
  if (!lots.length) return h("p", { class: "muted" }, t("plan.no.lots"));
  const lines = [...new Set(lots.map((l) => `${l.site_id}/${l.line_id}`))].sort();
  const t0 = Math.min(...lots.map((l) => Date.parse(l.start_ts)));
  const t1 = Math.max(...lots.map((l) => Math.max(Date.parse(l.end_ts), l.due_ts ? Date.parse(l.due_ts) : 0)));
  const W = 1180, L = 170, RH = 26, H = lines.length * RH + 24;
  const x = (ms) => L + ((ms - t0) / Math.max(1, t1 - t0)) * (W - L - 10);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "gantt", role: "img", "aria-label": t("plan.gantt") },
    s("defs", {}, s("pattern", { id: "hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" }, s("rect", { width: 3, height: 6, fill: "#8a6d1f" }))));
  lines.forEach((ln, i) => svg.append(s("text", { x: 4, y: i * RH + 17, class: "gantt-label" }, ln)));
  for (let d = Math.ceil(t0 / (6 * HOUR)) * 6 * HOUR; d < t1; d += 6 * HOUR) {
    svg.append(s("line", { x1: x(d), x2: x(d), y1: 0, y2: H - 20, class: "gantt-grid" }),
      s("text", { x: x(d) + 2, y: H - 6, class: "gantt-tick" }, when(new Date(d).toISOString())));
  }
  for (const lot of lots) {
    const row = lines.indexOf(`${lot.site_id}/${lot.line_id}`);
    const y = row * RH + 4;
    const a = x(Date.parse(lot.start_ts)), b = x(Date.parse(lot.end_ts));
    const setupEnd = x(Date.parse(lot.start_ts) + lot.setup_s * 1000);
    const late = lot.tardiness_s > 0;
    const g = s("g", { class: `gantt-lot${late ? " late" : ""}`, "data-lot": lot.lot_id ?? "", "data-line": lot.line_id },
      s("title", {}, `${lot.lot_id ?? t("plan.other.site")} · ${lot.product_id} × ${Math.round(lot.quantity)}`
        + (late ? ` · ${t("plan.late", { h: hours(lot.tardiness_s) })}` : "") + (lot.why_late ? ` · ${lot.why_late}` : "")
        + (lot.po_status === "started" || lot.po_status === "done"
          ? ` · ${t("plan.made")} ${Math.round(lot.made)} / ${Math.round(lot.quantity)}` : "")),
      s("rect", { x: a, y, width: Math.max(1, b - a), height: RH - 8, rx: 3, class: "gantt-bar" }));
    if (lot.po_status === "started" || lot.po_status === "done") {  // progress: a strip along the bar's foot
      const share = Math.max(0, Math.min(1, lot.made / lot.quantity));
      g.append(s("rect", { x: a, y: y + RH - 12, width: Math.max(1, (b - a) * share), height: 4,
        class: "gantt-made", "data-made": String(Math.round(lot.made)) }));
    }
    if (lot.setup_s > 0) g.append(s("rect", { x: a, y, width: Math.max(1, setupEnd - a), height: RH - 8,
      fill: "url(#hatch)", class: "gantt-setup" }));
    if (lot.due_ts) {
      const dx = x(Date.parse(lot.due_ts));
      g.append(s("line", { x1: dx, x2: dx, y1: y - 2, y2: y + RH - 6, class: `gantt-due${late ? " late" : ""}` }));
    }
    svg.append(g);
  }
  return svg;
}

/** The token's production orders per line with progress (good units counted since the start); operators
 * start the next one and finish the running one. */
function productionOrders(ctx, pos, who) {
  if (!pos.length) return h("p", { class: "muted" }, t("plan.no.pos"));
  const operator = ["operator", "engineer", "cluster-planner", "admin"].includes(who.role);
  const act = (po, what) => async () => {
    await send("POST", `planning/production-orders/${po.po_id}/${what}`);
    ctx.rerender();
  };
  return h("table", { class: "pos", "aria-label": t("plan.pos") },
    h("thead", {}, h("tr", {}, ...["plan.line", "plan.product", "plan.qty", "plan.planned", "plan.status", "plan.made", ""]
      .map((k) => h("th", { scope: "col" }, k ? t(k) : "")))),
    h("tbody", {}, ...pos.map((po) => {
      const share = Math.max(0, Math.min(1, po.made / po.quantity));
      return h("tr", { dataset: { po: po.po_id, status: po.status } },
        h("td", {}, `${po.site_id}/${po.line_id}`), h("td", {}, po.product_id),
        h("td", { class: "num" }, Math.round(po.quantity)),
        h("td", {}, `${when(po.planned_start)} – ${when(po.planned_end)}`),
        h("td", {}, t(`plan.po.${po.status}`)),
        h("td", { class: "progress-cell" },
          h("span", { class: "apq-bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": Math.round(po.quantity),
            "aria-valuenow": Math.round(po.made) }, h("span", { class: "apq-fill", style: `width:${(share * 100).toFixed(1)}%` })),
          h("span", { class: "small made" }, `${Math.round(po.made)} / ${Math.round(po.quantity)}`)),
        h("td", {}, operator && po.status === "planned" ? h("button", { type: "button", class: "btn btn-small",
          onclick: act(po, "start") }, t("plan.start"))
          : operator && po.status === "started" ? h("button", { type: "button", class: "btn btn-small",
            onclick: act(po, "finish") }, t("plan.finish")) : null));
    })));
}

const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)} %`);

/** A site's OEE, A, P, Q per line kind against the cluster's quartiles (none from fewer than three sites). */
function benchmark(site, answer) {
  const figures = ["oee", "availability", "performance", "quality"];
  return h("table", { class: "pos bench", "aria-label": t("plan.bench", { site }) },
    h("caption", { class: "card-title" }, t("plan.bench", { site })),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("plan.capability")),
      ...figures.map((f) => h("th", { scope: "col" }, t(`plan.fig.${f}`))))),
    h("tbody", {}, ...answer.kinds.map((k) => h("tr", { dataset: { kind: k.kind } },
      h("th", { scope: "row" }, k.kind === "all" ? t("plan.all.lines") : k.kind),
      ...figures.map((f) => {
        const q = k.cluster?.[f];
        return h("td", { class: "num" }, h("div", {}, pct(k.site?.[f])),
          h("div", { class: "small muted" }, q ? `${pct(q.q1)} · ${pct(q.median)} · ${pct(q.q3)}`
            : t("plan.few.sites", { n: answer.min_sites })));
      })))),
  );
}

function diffTable(ctx, proposal, changes, who) {
  const body = changes.length ? h("table", { class: "diff", "aria-label": t("plan.diff") },
    h("thead", {}, h("tr", {}, ...["plan.lot", "plan.change", "plan.from", "plan.to", "plan.shift"].map(
      (k) => h("th", { scope: "col" }, t(k))))),
    h("tbody", {}, ...changes.map((c) => h("tr", { class: `change-${c.change}`, dataset: { change: c.change } },
      h("td", {}, c.lot_id ?? t("plan.other.site")), h("td", {}, t(`plan.change.${c.change}`)),
      h("td", {}, c.from_site ? `${c.from_site}/${c.from_line ?? "…"}` : "–"),
      h("td", {}, c.to_site ? `${c.to_site}/${c.to_line ?? "…"}` : "–"),
      h("td", { class: "num" }, c.shift_s !== undefined ? `${c.shift_s > 0 ? "+" : ""}${hours(c.shift_s)} h` : "–")))))
    : h("p", { class: "muted" }, t("plan.no.changes"));
  const decide = (what) => async () => {
    await send("POST", `planning/plans/${proposal.plan_id}/${what}`);
    ctx.rerender();
  };
  return h("section", { class: "card proposal", "aria-labelledby": "pl-prop" },
    h("h2", { id: "pl-prop", class: "card-title" }, t("plan.proposal", { id: proposal.plan_id })),
    h("p", { class: "small muted" }, `${proposal.reason} · ${proposal.solver} · ${when(proposal.created_at)}`),
    body,
    plannerOf(who) ? h("div", { class: "actions" },
      h("button", { type: "button", class: "btn btn-primary", onclick: decide("accept") }, t("plan.accept")),
      h("button", { type: "button", class: "btn", onclick: decide("reject") }, t("plan.reject"))) : null);
}

export async function planning(ctx) {
  ctx.crumbs([[t("plan.title")]]);
  ctx.rerender = () => planning(ctx);
  const who = await me();
  const [cap, orders, model, plans, pos] = await Promise.all([
    get("planning/capacity", { days: 7 }), get("planning/orders"), get("planning/model"), get("planning/plans"),
    get("planning/production-orders"),
  ]);
  const benchSites = who.sites ?? [];
  const benches = await Promise.all(benchSites.map((site) => get("planning/benchmark", { site })));
  const proposal = plans.find((p) => p.status === "proposed");
  const accepted = plans.find((p) => p.status === "accepted");
  const [diff, current] = await Promise.all([
    proposal ? get(`planning/plans/${proposal.plan_id}/diff`).then((d) => d.changes) : [],
    accepted ? get(`planning/plans/${accepted.plan_id}`) : null,
  ]);
  if (!ctx.current()) return;
  const planNow = plannerOf(who) ? h("button", { type: "button", class: "btn btn-primary", onclick: async () => {
    await send("POST", "planning/plans");
    ctx.rerender();
  } }, t("plan.now")) : null;
  ctx.show(h("section", { class: "planning", "aria-labelledby": "pl-title" },
    h("header", { class: "card-head" }, h("h1", { id: "pl-title", class: "page-title" }, t("plan.title")), planNow),
    h("div", { class: "card" }, heatMap(cap.cluster, (r) => r.capability, t("plan.capability"), t("plan.cluster.free")),
      h("p", { class: "small muted" }, t("plan.estimator", { days: cap.estimator.lookback_days }))),
    cap.lines.length ? h("div", { class: "card" }, heatMap(cap.lines, (r) => `${r.site}/${r.line}`, t("plan.line"),
      t("plan.own.free"))) : null,
    proposal ? diffTable(ctx, proposal, diff, who) : null,
    h("section", { class: "card", "aria-labelledby": "pl-gantt" },
      h("h2", { id: "pl-gantt", class: "card-title" }, current ? t("plan.current", { id: current.plan_id }) : t("plan.none")),
      current ? gantt(current) : null),
    h("section", { class: "card", "aria-labelledby": "pl-pos" },
      h("h2", { id: "pl-pos", class: "card-title" }, t("plan.pos")), productionOrders(ctx, pos, who)),
    h("section", { class: "card", "aria-labelledby": "pl-orders" },
      h("h2", { id: "pl-orders", class: "card-title" }, t("plan.orders")), orderBoard(ctx, orders, model, who, current)),
    ...benches.map((b, i) => h("div", { class: "card" }, benchmark(benchSites[i], b),
      h("p", { class: "small muted" }, t("plan.bench.note", { days: b.days }))))));
}
