// Work orders page (#/work-orders): the list, a form to create one by hand or from an alarm
// (#/work-orders?alarm=ID&site=S&machine=M, linked from the alarm list), status changes (operator and above),
// and MTBF / MTTR per machine and line of a site over the last 30 days (GET /api/v1/reliability).
import { ApiError, get, send } from "../api.js";
import { may, me } from "../data.js";
import { h } from "../dom.js";
import { clock } from "../format.js";
import { t } from "../i18n.js";

const NEXT = { open: "in_progress", in_progress: "done" };

function localIso(value) {
  // <input type="datetime-local"> gives wall time without a zone: the browser's zone is meant.
  if (!value) return null;
  const d = new Date(value);
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const pad = (n) => String(Math.trunc(Math.abs(n))).padStart(2, "0");
  return `${value.length === 16 ? `${value}:00` : value}${sign}${pad(off / 60)}:${pad(off % 60)}`;
}

export async function workOrders(ctx, query) {
  ctx.crumbs([[t("alarms"), "#/alarms"], [t("work.orders")]]);
  const [who, sites] = await Promise.all([me().catch(() => null), get("sites")]);
  if (!ctx.current()) return;
  const list = h("tbody", { id: "wo-rows" });
  const error = h("p", { class: "form-error", role: "alert", id: "wo-error" });
  const field = (id, label, input) => h("label", { class: "filter" }, h("span", {}, label), input);
  const siteIn = h("select", { id: "wo-site" }, ...sites.map((s) => h("option", { value: s.site_id,
    selected: s.site_id === query.get("site") }, s.name || s.site_id)));
  const machineIn = h("input", { id: "wo-machine", type: "text", value: query.get("machine") ?? "" });
  const titleIn = h("input", { id: "wo-title", type: "text", required: true });
  const assigneeIn = h("input", { id: "wo-assignee", type: "text" });
  const alarmIn = h("input", { id: "wo-alarm", type: "text", value: query.get("alarm") ?? "", inputmode: "numeric" });
  const startIn = h("input", { id: "wo-start", type: "datetime-local" });
  const endIn = h("input", { id: "wo-end", type: "datetime-local" });
  const form = may(who, "operator") ? h("form", { class: "wo-form", id: "wo-form" },
    h("h2", { class: "card-title" }, t("wo.new")),
    h("div", { class: "filters" }, field("wo-site", t("site"), siteIn), field("wo-machine", t("machine"), machineIn),
      field("wo-title", t("wo.title"), titleIn), field("wo-assignee", t("wo.assignee"), assigneeIn),
      field("wo-alarm", t("wo.alarm"), alarmIn)),
    h("div", { class: "filters" }, field("wo-start", t("wo.planned.start"), startIn),
      field("wo-end", t("wo.planned.end"), endIn),
      h("button", { type: "submit", class: "btn btn-primary" }, t("wo.create"))), error) : null;
  const relSite = h("select", { id: "rel-site", "aria-label": t("site") }, ...sites.map((s) => h("option",
    { value: s.site_id, selected: s.site_id === query.get("site") }, s.name || s.site_id)));
  const relRows = h("tbody", { id: "rel-rows" });
  ctx.show(h("section", { class: "card wo-page" }, h("h1", { class: "page-title" }, t("work.orders")), form,
    h("table", { class: "alarm-table" }, h("thead", {}, h("tr", {}, ...["wo.id", "wo.title", "machine", "wo.assignee",
      "wo.status", "wo.planned", "alarm.actions"].map((k) => h("th", { scope: "col" }, t(k))))), list)),
    h("section", { class: "card rel-page" },
      h("div", { class: "card-head" }, h("h2", { class: "card-title" }, t("rel.title")), relSite),
      h("table", { class: "alarm-table" }, h("thead", {}, h("tr", {}, ...["machine", "line", "rel.failures",
        "rel.mtbf", "rel.mttr", "rel.run"].map((k) => h("th", { scope: "col" }, t(k))))), relRows)));
  const fixed = (v, digits = 1) => (v === null || v === undefined ? "—" : Number(v).toFixed(digits));
  async function loadReliability() {
    const rel = await get("reliability", { site: relSite.value });
    if (!ctx.current()) return;
    const rows = [...rel.machines, ...rel.lines.map((l) => ({ ...l, machine: null }))];
    relRows.replaceChildren(...(rows.length ? rows.map((r) => h("tr", { dataset: { machine: r.machine ?? "", line: r.line } },
      h("td", {}, r.machine ?? t("rel.line.total")), h("td", {}, r.line), h("td", {}, String(r.failures)),
      h("td", {}, fixed(r.mtbf_h)), h("td", {}, fixed(r.mttr_min)), h("td", {}, fixed(r.run_h))))
      : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, t("no.data")))]));
  }
  relSite.addEventListener("change", loadReliability);

  form?.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const body = { site: siteIn.value, title: titleIn.value, machine: machineIn.value || null,
      assignee: assigneeIn.value || null, alarm_ids: alarmIn.value ? [Number(alarmIn.value)] : [],
      planned_start: localIso(startIn.value), planned_end: localIso(endIn.value) };
    try {
      await send("POST", "work-orders", body);
      titleIn.value = "";
      alarmIn.value = "";
      await load();
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.message : String(err);
    }
  });

  let asked = 0;
  async function load() {
    const mine = ++asked;
    const rows = await get("work-orders");
    if (!ctx.current() || mine !== asked) return;
    list.replaceChildren(...(rows.length ? rows.map((w) => h("tr", { dataset: { woId: w.id, status: w.status } },
      h("td", {}, `#${w.id}`), h("td", {}, w.title), h("td", {}, w.machine ?? w.site), h("td", {}, w.assignee ?? "—"),
      h("td", { class: "wo-status" }, t(`wo.st.${w.status}`)),
      h("td", {}, w.planned_start ? `${clock(Date.parse(w.planned_start))}–${clock(Date.parse(w.planned_end))}` : "—"),
      h("td", {}, may(who, "operator") && NEXT[w.status] ? h("button", { type: "button", class: "btn btn-small",
        onclick: async () => {
          await send("PATCH", `work-orders/${w.id}`, { status: NEXT[w.status] });
          await load();
        } }, t(`wo.to.${NEXT[w.status]}`)) : null))) : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, t("wo.none")))]));
  }
  await Promise.all([load(), loadReliability()]);
}
