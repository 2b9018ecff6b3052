// Site calendar page (#/site/S/calendar): the shifts with their breaks, one-off planned stops, days without shifts
// and the state classes as GET /sites/S/calendar returns them. Engineers and above edit shifts and planned stops
// and save them (PUT), which recomputes the site's OEE windows; the API's error (field and value) is shown here.
import { ApiError, get, getOr, send } from "../api.js";
import { may, me } from "../data.js";
import { h } from "../dom.js";
import { stateName } from "../format.js";
import { currentLang, t } from "../i18n.js";

const HHMM = /^([01][0-9]|2[0-3]):[0-5][0-9]$/;
const DAYS = [1, 2, 3, 4, 5, 6, 7]; // ISO weekdays, 1 = Monday
const CLASSES = ["planned", "availability_loss", "performance_loss"];

const toMinutes = (text) => Number(text.slice(0, 2)) * 60 + Number(text.slice(3, 5));
const fromMinutes = (m) => `${String(Math.floor(m / 60) % 24).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`;

/** A shift's end (local HH:MM) from its start and length. */
export function shiftEnd(start, hours) {
  if (!HHMM.test(start)) return "";
  return fromMinutes((toMinutes(start) + Math.round(hours * 60)) % 1440);
}

/** A shift's length in hours from local start and end (an end at or before the start is the next day). */
export function shiftHours(start, end) {
  const span = (((toMinutes(end) - toMinutes(start)) % 1440) + 1440) % 1440;
  return (span || 1440) / 60;
}

/** "2026-05-01 08:00+08:00": an instant as wall-clock time of zone `tz` with its UTC offset (the API reads it). */
export function zoned(ms, tz) {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "longOffset" })
    .formatToParts(new Date(ms));
  const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
  const offset = p.timeZoneName === "GMT" ? "+00:00" : p.timeZoneName.replace("GMT", "");
  const seconds = p.second === "00" ? "" : `:${p.second}`;
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}${seconds}${offset}`;
}

const field = (k, value, attrs = {}) => h("input", { type: "text", dataset: { k }, value: value ?? "",
  autocomplete: "off", spellcheck: "false", ...attrs });
const read = (row, k) => row.querySelector(`[data-k="${k}"]`)?.value.trim() ?? "";

function breakRow(brk) {
  const row = h("div", { class: "break", role: "group", "aria-label": t("cal.break") },
    field("start", brk.start, { class: "in-time", "aria-label": t("cal.break.start"), placeholder: "HH:MM" }),
    field("minutes", brk.minutes, { class: "in-min", inputmode: "decimal", "aria-label": t("cal.break.minutes") }),
    h("span", { class: "muted small" }, t("cal.min")),
    h("button", { type: "button", class: "btn btn-small btn-quiet", "aria-label": t("cal.break.remove"),
      title: t("cal.break.remove"), onclick: () => row.remove() }, "×"));
  if (brk.code !== undefined) row.dataset.code = brk.code;
  return row;
}

function shiftRow(shift, n) {
  const start = field("start", shift.start, { class: "in-time", "aria-label": t("cal.shift.start"), placeholder: "HH:MM" });
  const end = field("end", shiftEnd(shift.start, shift.hours), { class: "in-time", "aria-label": t("cal.shift.end"),
    placeholder: "HH:MM" });
  const span = h("span", { class: "shift-span muted small", "aria-live": "polite" });
  const showSpan = () => {
    const ok = HHMM.test(start.value.trim()) && HHMM.test(end.value.trim());
    const hours = ok ? shiftHours(start.value.trim(), end.value.trim()) : null;
    const nextDay = ok && toMinutes(end.value.trim()) <= toMinutes(start.value.trim());
    span.textContent = ok ? t("hours", { n: +hours.toFixed(2) }) + (nextDay ? ` · ${t("cal.next.day")}` : "") : "";
  };
  start.addEventListener("input", showSpan);
  end.addEventListener("input", showSpan);
  showSpan();
  const days = new Set(shift.days ?? [1, 2, 3, 4, 5, 6]);
  const breaks = h("div", { class: "break-list" }, ...(shift.breaks ?? []).map(breakRow));
  const name = field("name", shift.name, { class: "in-name", "aria-label": t("cal.shift.name") });
  const row = h("fieldset", { class: "shift" },
    h("legend", { class: "visually-hidden" }, t("cal.shift.n", { n })),
    h("div", { class: "shift-main" }, name, start, end, span,
      h("div", { class: "days", role: "group", "aria-label": t("cal.shift.days"), dataset: { k: "days" } },
        ...DAYS.map((d) => h("label", { class: "day" },
          h("input", { type: "checkbox", dataset: { day: d }, checked: days.has(d) }), t(`day.${d}`)))),
      h("button", { type: "button", class: "btn btn-small btn-quiet", onclick: () => row.remove() },
        t("cal.shift.remove"))),
    h("div", { class: "shift-breaks" }, h("span", { class: "muted small" }, t("cal.breaks")), breaks,
      h("button", { type: "button", class: "btn btn-small",
        onclick: () => {
          const fresh = breakRow({ start: start.value.trim() || "12:00", minutes: 30 });
          breaks.append(fresh);
          fresh.querySelector("input").focus();
        } }, t("cal.break.add"))));
  return row;
}

function reasonSelect(reasons, code) {
  const known = reasons.some((r) => r.code === code);
  const options = [...(known ? [] : [{ code }]), ...reasons].map((r) =>
    h("option", { value: r.code, selected: r.code === code }, `${stateName(r.code)} (${r.code})`));
  return h("select", { dataset: { k: "code" }, "aria-label": t("cal.planned.code") }, ...options);
}

function plannedRow(stop, tz, reasons) {
  const row = h("fieldset", { class: "pstop" },
    h("legend", { class: "visually-hidden" }, t("cal.planned")),
    field("start", stop.start ? zoned(Date.parse(stop.start), tz) : stop.startText,
      { class: "in-when", "aria-label": t("cal.start") }),
    field("end", stop.end ? zoned(Date.parse(stop.end), tz) : stop.endText, { class: "in-when", "aria-label": t("cal.end") }),
    reasonSelect(reasons, stop.code ?? 210000),
    field("note", stop.note, { class: "in-note", "aria-label": t("cal.planned.note"), placeholder: t("cal.planned.note") }),
    h("button", { type: "button", class: "btn btn-small btn-quiet", onclick: () => row.remove() },
      t("cal.planned.remove")));
  return row;
}

/** The PUT body from the form, or a local error (field, value) for an end time it cannot turn into hours. */
function collect(form, stored) {
  const shifts = [...form.querySelectorAll(".shift")].map((row, i) => {
    const main = row.querySelector(".shift-main");
    const start = read(main, "start");
    const end = read(main, "end");
    if (HHMM.test(start) && !HHMM.test(end)) {
      throw new ApiError(400, t("cal.end.bad", { field: `shifts.${i}.end`, value: JSON.stringify(end) }),
        `shifts.${i}.end`, end);
    }
    // A start that is not a time goes to the API as typed: its error names the field and the value.
    const old = stored.shifts?.[i]?.hours ?? 8;
    const breaks = [...row.querySelectorAll(".break")].map((b) => ({ start: read(b, "start"), minutes: read(b, "minutes"),
      ...(b.dataset.code ? { code: Number(b.dataset.code) } : {}) }));
    return { name: read(main, "name"), start, hours: HHMM.test(start) ? shiftHours(start, end) : old,
      days: [...row.querySelectorAll("[data-day]")].filter((c) => c.checked).map((c) => Number(c.dataset.day)),
      breaks };
  });
  const planned = [...form.querySelectorAll(".pstop")].map((row) => ({ start: read(row, "start"),
    end: read(row, "end"), code: Number(read(row, "code")), note: read(row, "note") }));
  return { shifts, no_shift: stored.no_shift ?? [], planned_stops: planned };
}

/** The element an API field names ("shifts.0.breaks.1.minutes", "planned_stops[2].end"), or null. */
function fieldElement(form, name) {
  const parts = String(name ?? "").replace(/\[(\d+)\]/g, ".$1").split(".").filter(Boolean);
  const rows = { shifts: ".shift", breaks: ".break", planned_stops: ".pstop" };
  let el = form;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (rows[part] && /^\d+$/.test(parts[i + 1] ?? "")) {
      el = el.querySelectorAll(rows[part])[Number(parts[i + 1])] ?? el;
      i++;
      continue;
    }
    const scope = el.querySelector(":scope > .shift-main") ?? el;
    const found = scope.querySelector(`[data-k="${CSS.escape(part)}"]`);
    if (!found) break;
    el = found;
  }
  return el === form ? null : el;
}

export async function calendar(ctx, siteId) {
  const site = encodeURIComponent(siteId);
  const [detail, first, reasons, who] = await Promise.all([
    get(`sites/${site}`),
    get(`sites/${site}/calendar`),
    getOr(`sites/${site}/stop-reasons`, {}, []),
    me().catch(() => null),
  ]);
  if (!ctx.current()) return;
  const title = detail.name || siteId;
  ctx.crumbs([[title, `#/site/${site}`], [t("cal.title")]]);
  const editor = may(who, "engineer");

  function render(stored, note = "") {
    const tz = stored.timezone || detail.tz || "UTC";
    const shifts = h("div", { class: "shift-list" }, ...(stored.shifts ?? []).map((s, i) => shiftRow(s, i + 1)));
    const planned = h("div", { class: "pstop-list" }, ...stored.planned_stops.map((p) => plannedRow(p, tz, reasons)));
    const error = h("p", { class: "form-error", role: "alert", id: "cal-error" });
    const ok = h("p", { class: "form-ok", role: "status", id: "cal-ok" }, note);
    const save = h("button", { type: "submit", class: "btn btn-primary" }, t("cal.save"));
    const example = zoned(Date.now() + 86_400_000, tz).replace(/ \d\d:\d\d(:\d\d)?/, " 08:00");
    const edited = stored.updated_at
      ? t("cal.edited", { time: new Date(stored.updated_at).toLocaleString(currentLang()), who: stored.updated_by ?? "?" }) : "";

    const form = h("form", { class: "cal-form", id: "cal-form", novalidate: true },
      h("fieldset", { class: "cal-all", disabled: !editor },
        h("section", { class: "card cal-section", "aria-labelledby": "cal-shifts" },
          h("div", { class: "card-head" }, h("h2", { id: "cal-shifts" }, t("cal.shifts")),
            h("button", { type: "button", class: "btn btn-small", id: "add-shift",
              onclick: () => {
                const n = shifts.children.length + 1;
                const row = shiftRow({ name: t("cal.shift.new", { n }), start: "06:00", hours: 8, days: [1, 2, 3, 4, 5] }, n);
                shifts.append(row);
                row.querySelector("input").focus();
              } }, t("cal.shift.add"))),
          stored.shifts ? null : h("p", { class: "muted" }, t("cal.default")),
          h("div", { class: "shift-head", "aria-hidden": "true" }, h("span", {}, t("cal.shift.name")),
            h("span", {}, t("cal.shift.start")), h("span", {}, t("cal.shift.end")), h("span", {}),
            h("span", {}, t("cal.shift.days"))),
          shifts),
        h("section", { class: "card cal-section", "aria-labelledby": "cal-planned" },
          h("div", { class: "card-head" }, h("h2", { id: "cal-planned" }, t("cal.planned")),
            h("button", { type: "button", class: "btn btn-small", id: "add-planned",
              onclick: () => {
                const row = plannedRow({ startText: example, endText: example.replace(" 08:00", " 12:00"), code: 210000,
                  note: "" }, tz, reasons);
                planned.append(row);
                row.querySelector("input").focus();
              } }, t("cal.planned.add"))),
          h("p", { class: "muted small" }, t("cal.planned.hint", { example })),
          h("div", { class: "pstop-head", "aria-hidden": "true" }, h("span", {}, t("cal.start")),
            h("span", {}, t("cal.end")), h("span", {}, t("cal.planned.code")), h("span", {}, t("cal.planned.note"))),
          planned)),
      editor ? h("div", { class: "cal-actions" }, save,
        h("button", { type: "button", class: "btn", onclick: () => render(stored) }, t("cal.discard")), ok, error)
        : null);

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      for (const el of form.querySelectorAll("[aria-invalid]")) {
        el.removeAttribute("aria-invalid");
        el.removeAttribute("aria-describedby");
      }
      ok.textContent = "";
      error.textContent = "";
      save.disabled = true;
      save.textContent = t("saving");
      try {
        const res = await send("PUT", `sites/${site}/calendar`, collect(form, stored));
        if (!ctx.current()) return;
        render(res, t(res.recomputed ? "cal.saved" : "cal.saved.late"));
        ctx.view.querySelector("#cal-ok")?.focus();
      } catch (err) {
        save.disabled = false;
        save.textContent = t("cal.save");
        error.textContent = t("save.error", { message: err instanceof ApiError ? err.message : String(err) });
        const bad = err instanceof ApiError ? fieldElement(form, err.field) : null;
        if (bad) {
          bad.setAttribute("aria-invalid", "true");
          bad.setAttribute("aria-describedby", "cal-error");
          bad.focus();
        }
      }
    });

    ctx.show(h("section", { class: "calendar-page" },
      h("header", { class: "cal-top" },
        h("h1", { class: "page-title" }, t("cal.title"), h("span", { class: "muted small" }, ` · ${title}`)),
        h("p", { class: "small" }, t("cal.tz", { tz }), " ",
          h("span", { class: "muted" }, t("cal.source", { source: stored.source ?? "?" }), edited ? ` · ${edited}` : "")),
        editor ? null : h("p", { class: "notice-inline" }, t("cal.readonly"))),
      h("div", { class: "cal-grid" },
        form,
        h("aside", { class: "cal-side" },
          h("section", { class: "card", "aria-labelledby": "cal-classes" },
            h("h2", { id: "cal-classes", class: "card-title" }, t("cal.classes")),
            stored.state_classes ? h("dl", { class: "classes" }, ...CLASSES.flatMap((k) => [
              h("dt", {}, t(`cal.classes.${k}`)),
              h("dd", {}, h("ul", { class: "code-list" }, ...(stored.state_classes[k] ?? []).map((c) =>
                h("li", { dataset: { code: c } }, `${stateName(c)} (${c})`))))]))
              : h("p", { class: "muted small" }, t("cal.classes.default"))),
          h("section", { class: "card", "aria-labelledby": "cal-noshift" },
            h("h2", { id: "cal-noshift", class: "card-title" }, t("cal.noshift")),
            (stored.no_shift ?? []).length ? h("ul", { class: "code-list noshift-list" }, ...stored.no_shift.map((p) =>
              h("li", {}, `${p.name}: `, h("span", { class: "nowrap" }, `${p.first_day} – ${p.last_day}`))))
              : h("p", { class: "muted small" }, t("cal.noshift.none")))))));
  }

  render(first);
}
