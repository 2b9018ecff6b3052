// Alarms page (#/alarms): the alarm list with filters (site, state, priority); operators and above acknowledge
// and shelve with a comment, engineers and above take an alarm out of service. The API words every refusal.
import { ApiError, get, send } from "../api.js";
import { may, me, throttled } from "../data.js";
import { h } from "../dom.js";
import { clock } from "../format.js";
import { t } from "../i18n.js";

const STATES = ["open", "unack", "ack", "rtn_unack", "shelved", "suppressed", "out_of_service", "normal", "all"];
const PRIORITIES = ["", "critical", "high", "medium", "low"];

function select(id, label, values, current, text) {
  return h("label", { class: "filter" }, h("span", {}, label),
    h("select", { id }, ...values.map((v) => h("option", { value: v, selected: v === current }, text(v)))));
}

export async function alarms(ctx) {
  ctx.crumbs([[t("alarms")]]);
  const [who, sites] = await Promise.all([me().catch(() => null), get("sites")]);
  if (!ctx.current()) return;
  const filters = { site: "", state: "open", priority: "" };
  const siteSel = select("f-site", t("site"), ["", ...sites.map((s) => s.site_id)], "",
    (v) => (v ? sites.find((s) => s.site_id === v)?.name || v : t("all")));
  const stateSel = select("f-state", t("alarm.state"), STATES, "open", (v) => t(`alarm.st.${v}`));
  const prioSel = select("f-priority", t("alarm.priority"), PRIORITIES, "", (v) => (v ? t(`prio.${v}`) : t("all")));
  const body = h("tbody", { id: "alarm-rows" });
  const message = h("p", { class: "form-error", role: "alert", id: "alarm-error" });
  ctx.show(h("section", { class: "card alarms-page" },
    h("div", { class: "card-head" }, h("h1", { class: "page-title" }, t("alarms")),
      h("a", { class: "btn btn-small", href: "#/work-orders" }, t("work.orders"))),
    h("div", { class: "filters" }, siteSel, stateSel, prioSel),
    message,
    h("table", { class: "alarm-table" },
      h("thead", {}, h("tr", {}, ...["alarm.priority", "alarm.state", "alarm.source", "machine", "alarm.message",
        "alarm.raised", "alarm.actions"].map((k) => h("th", { scope: "col" }, t(k))))),
      body)));

  for (const [el, key] of [[siteSel, "site"], [stateSel, "state"], [prioSel, "priority"]]) {
    el.querySelector("select").addEventListener("change", (e) => {
      filters[key] = e.target.value;
      load();
    });
  }

  function actionCell(a) {
    if (!may(who, "operator")) return h("td", {});
    const comment = h("input", { type: "text", class: "in-comment", "aria-label": t("alarm.comment"),
      placeholder: t("alarm.comment") });
    const act = (path, extra = {}) => async () => {
      message.textContent = "";
      try {
        await send("POST", `alarms/${a.id}/${path}`, { comment: comment.value, ...extra });
        await load();
      } catch (err) {
        message.textContent = err instanceof ApiError ? err.message : String(err);
        comment.focus();
      }
    };
    const buttons = [];
    if (!a.acked) buttons.push(h("button", { type: "button", class: "btn btn-small", onclick: act("acknowledge") }, t("alarm.ack")));
    if (a.state === "shelved") buttons.push(h("button", { type: "button", class: "btn btn-small", onclick: act("unshelve") }, t("alarm.unshelve")));
    else if (!a.out_of_service) buttons.push(h("button", { type: "button", class: "btn btn-small", onclick: act("shelve", { minutes: 60 }) }, t("alarm.shelve")));
    if (may(who, "engineer")) {
      buttons.push(h("button", { type: "button", class: "btn btn-small btn-quiet",
        onclick: act("out-of-service", { out_of_service: !a.out_of_service }) },
        t(a.out_of_service ? "alarm.in.service" : "alarm.out.of.service")));
    }
    buttons.push(h("a", { class: "btn btn-small btn-quiet", href: `#/work-orders?alarm=${a.id}&site=${encodeURIComponent(a.site)}` +
      (a.machine ? `&machine=${encodeURIComponent(a.machine)}` : "") }, t("wo.create")));
    return h("td", { class: "alarm-actions" }, comment, ...buttons);
  }

  let asked = 0;
  async function load() {
    const params = { site: filters.site || undefined, priority: filters.priority || undefined };
    if (filters.state === "all") params.all = true;
    else if (filters.state !== "open") params.state = filters.state;
    const mine = ++asked;
    const rows = await get("alarms", params);
    if (!ctx.current() || mine !== asked) return; // a later filter change answered first: keep its rows
    body.replaceChildren(...(rows.length ? rows.map((a) => h("tr", { class: `prio-${a.priority} st-${a.state}`,
      dataset: { alarmId: a.id, state: a.state } },
      h("td", {}, h("span", { class: `prio prio-${a.priority}` }, t(`prio.${a.priority}`))),
      h("td", { class: "alarm-state" }, t(`alarm.st.${a.state}`)),
      h("td", {}, t(`alarm.src.${a.source}`)),
      h("td", {}, a.machine ? h("a", { href: `#/site/${encodeURIComponent(a.site)}/machine/${encodeURIComponent(a.machine)}` },
        a.machine) : a.site),
      h("td", { class: "alarm-msg", title: a.message }, a.message, a.chattering ? h("span", { class: "muted" }, ` · ${t("alarm.chattering")}`) : null),
      h("td", {}, a.raised_ts ? clock(Date.parse(a.raised_ts)) : "—"),
      actionCell(a))) : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, t("alarm.none")))]));
  }
  await load();
  const again = throttled(1_000);
  ctx.onLeave(again.cancel);
  ctx.live((kind) => {
    if (kind === "alarm") again("alarms", load);
  });
}
