// Stops without a reason (unspecified stops, codes 40000-49999, DESIGN.md section 4) listed under the machine's
// timeline, and the small form that gives one a reason: POST /sites/S/machines/M/stops/reason (operator or above).
import { ApiError, send } from "../api.js";
import { h } from "../dom.js";
import { CATEGORIES, category, clock, duration, stateName } from "../format.js";
import { t } from "../i18n.js";

/** True for an unspecified stop that nobody has given a reason yet (the API then reports `original_code`). */
export function needsReason(iv) {
  return iv.code >= 40000 && iv.code < 50000 && iv.original_code === undefined;
}

/** The stops of `intervals` that need a reason, newest first, as timeline marks with their true start. */
export function openStops(intervals, now) {
  return intervals.filter(needsReason).map((iv) => {
    const key = iv.stop_start ?? iv.start; // the API clips intervals to the range; the stop began at stop_start
    const begin = Date.parse(key);
    const seconds = Math.max(0, ((iv.end ? Date.parse(iv.end) : now) - begin) / 1000);
    const label = t("stops.mark", { time: clock(begin), duration: duration(seconds) });
    return { key, start: iv.start, end: iv.end, code: iv.code, begin, seconds, label };
  }).reverse();
}

/** The reasons as <optgroup>s per category (in the order of the analytics categories), codes ascending. */
function reasonOptions(reasons) {
  const groups = new Map();
  for (const r of reasons) {
    const cat = category(r.category, r.code);
    if (!groups.has(cat)) groups.set(cat, []);
    groups.get(cat).push(r);
  }
  const order = [...groups.keys()].sort((a, b) => CATEGORIES.indexOf(a) - CATEGORIES.indexOf(b));
  return order.map((cat) => h("optgroup", { label: t(`cat.${cat}`) },
    ...groups.get(cat).sort((a, b) => a.code - b.code)
      .map((r) => h("option", { value: r.code }, `${stateName(r.code)} (${r.code})`))));
}

/**
 * The panel: `update(intervals)` lists the stops, `pick(key)` opens the form for one (also from the timeline).
 * `onPicked(key)` lets the page highlight the stop on the timeline; `onSaved()` re-reads the page's figures.
 */
export function stopsPanel({ siteId, machineId, reasons, onPicked, onSaved }) {
  let stops = [];
  let picked = null;
  let shown = ""; // what the list shows: a live event that changes nothing must not take a button's focus away
  const count = h("span", { class: "muted", id: "stops-count" });
  const list = h("div", { class: "stops-list" });
  const box = h("div", { class: "reason-box" });
  const ok = h("p", { class: "form-ok", role: "status", id: "reason-ok", tabindex: "-1" });
  const error = h("p", { class: "form-error", role: "alert", id: "reason-error" });
  const el = h("section", { class: "stops", id: "stops", "aria-labelledby": "stops-title" },
    h("div", { class: "stops-left" },
      h("h3", { id: "stops-title", class: "card-title" }, t("stops.title"), " ", count), list),
    h("div", { class: "stops-right" }, box, ok, error));

  function renderList() {
    const now = `${picked}|${stops.map((st) => `${st.key} ${st.code} ${duration(st.seconds)}`).join("|")}`;
    if (now === shown) return;
    shown = now;
    count.textContent = stops.length ? `(${stops.length})` : "";
    if (!stops.length) {
      list.replaceChildren(h("p", { class: "muted small" }, t("stops.none")));
      return;
    }
    const head = h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("stops.start")),
      h("th", { scope: "col" }, t("stops.duration")), h("th", { scope: "col" }, t("stops.code")),
      h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, t("stops.action")))));
    const rows = stops.map((st) => h("tr", { class: st.key === picked ? "picked" : null, dataset: { key: st.key } },
      h("td", {}, clock(st.begin)), h("td", {}, duration(st.seconds)),
      h("td", {}, `${stateName(st.code)} (${st.code})`),
      h("td", {}, h("button", { type: "button", class: "btn btn-small", "aria-pressed": String(st.key === picked),
        "aria-label": t("stops.pick.label", { time: clock(st.begin) }), onclick: () => pick(st.key) },
      t("stops.pick")))));
    list.replaceChildren(h("table", { class: "stops-table" }, head, h("tbody", {}, ...rows)));
  }

  function renderForm() {
    const st = stops.find((x) => x.key === picked);
    if (!st) {
      box.replaceChildren(h("p", { class: "muted small" }, stops.length ? t("reason.hint") : ""));
      return;
    }
    const select = h("select", { id: "reason", name: "reason", required: true },
      h("option", { value: "" }, t("reason.choose")), ...reasonOptions(reasons));
    const save = h("button", { class: "btn btn-primary", type: "submit" }, t("save"));
    const form = h("form", { class: "reason-form", id: "reason-form", novalidate: true },
      h("p", { class: "reason-what" }, h("strong", {}, t("reason.title", { time: clock(st.begin) })),
        ` · ${duration(st.seconds)} · ${stateName(st.code)} (${st.code})`),
      h("label", { for: "reason" }, t("reason.label")), select,
      h("div", { class: "form-actions" }, save,
        h("button", { class: "btn", type: "button", onclick: () => pick(null) }, t("cancel"))));
    select.addEventListener("change", () => {
      error.textContent = "";
    });
    form.addEventListener("keydown", (e) => {
      if (e.key === "Escape") pick(null);
    });
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      ok.textContent = "";
      error.textContent = "";
      if (!select.value) {
        error.textContent = t("reason.required");
        select.focus();
        return;
      }
      const code = Number(select.value);
      save.disabled = true;
      save.textContent = t("saving");
      try {
        const res = await send("POST",
          `sites/${encodeURIComponent(siteId)}/machines/${encodeURIComponent(machineId)}/stops/reason`,
          { start: st.key, code });
        picked = null;
        await onSaved();
        ok.textContent = t(res.recomputed ? "reason.saved" : "reason.saved.late",
          { time: clock(st.begin), reason: stateName(code) });
        ok.focus();
      } catch (err) {
        save.disabled = false;
        save.textContent = t("save");
        error.textContent = t("save.error", { message: err instanceof ApiError ? err.message : String(err) });
      }
    });
    box.replaceChildren(form);
  }

  function pick(key) {
    picked = key;
    error.textContent = "";
    if (key !== null) ok.textContent = "";
    renderList();
    renderForm();
    onPicked(picked);
    if (key !== null) el.querySelector("#reason")?.focus();
  }

  function update(intervals) {
    stops = openStops(intervals, Date.now());
    if (picked !== null && !stops.some((x) => x.key === picked)) picked = null;
    renderList();
    if (!box.querySelector("form") || picked === null) renderForm();
    return stops;
  }

  return { el, update, pick, picked: () => picked };
}
