// Shift report page (#/site/S/report[/START_MS[/LINE]]): a finished shift per line and for the site, printable on
// A4 (css/report.css), with links to the CSV and PDF exports and, for operators and above, a comment form.
import { API, ApiError, get, getToken, send } from "../api.js";
import { may, me } from "../data.js";
import { h } from "../dom.js";
import { num, pct } from "../format.js";
import { currentLang, t } from "../i18n.js";

const LOSSES = ["equipment_failure", "setup_adjustment", "idling_minor_stops", "reduced_speed", "process_defects",
  "startup_rejects", "material_stops"];

const hours = (s) => (s === null || s === undefined ? "—" : num(s / 3600));
const minutes = (s) => (s === null || s === undefined ? "—" : num(s / 60));
const reportLang = () => (currentLang() === "zh-CN" ? "zh" : "en");
const base = (site) => `#/site/${encodeURIComponent(site)}/report`;

function exportUrl(params, format) {
  const u = new URL("reports/shift", API);
  for (const [k, v] of Object.entries({ ...params, format, lang: reportLang() })) if (v) u.searchParams.set(k, v);
  return u;
}

/** A link to an export: a real URL, fetched with the session's token when clicked and saved as a file. */
function exportLink(params, format, status) {
  const href = exportUrl(params, format);
  return h("a", { class: "btn", id: `report-${format}`, href: href.href, onclick: async (e) => {
    e.preventDefault();
    status.textContent = "";
    const res = await fetch(href, { headers: { Authorization: `Bearer ${getToken() ?? ""}` } });
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try { message = (await res.json()).error?.message ?? message; } catch { /* not JSON */ }
      status.textContent = t("save.error", { message });
      return;
    }
    const name = /filename="([^"]+)"/.exec(res.headers.get("Content-Disposition") ?? "")?.[1] ?? `report.${format}`;
    const blob = URL.createObjectURL(await res.blob());
    const a = h("a", { href: blob, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(blob), 10_000);
    status.textContent = t("rep.downloaded", { name });
  } }, t(`rep.${format}`));
}

function table(cls, head, rows) {
  return h("table", { class: `report-table ${cls}` },
    h("thead", {}, h("tr", {}, ...head.map((x, i) => h("th", { scope: "col", class: i ? "num" : "" }, x)))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((x, i) => (i ? h("td", { class: "num" }, x)
      : h("th", { scope: "row" }, x)))))));
}

const keyHead = () => [t("rep.oee"), t("a"), t("p"), t("q"), t("rep.planned.h"), t("rep.run.h"), t("total"), t("good"),
  t("rep.stops"), t("rep.failures"), t("rep.microstops"), t("rep.mtbf.h"), t("rep.mttr.min")];
const keyRow = (f) => [pct(f.oee), pct(f.availability), pct(f.performance), pct(f.quality), hours(f.planned_s),
  hours(f.run_s), num(f.total), num(f.good), num(f.stops), num(f.failures), num(f.microstops), hours(f.mtbf_s),
  minutes(f.mttr_s)];

function lossTable(names, groups) {
  const keys = LOSSES.filter((k) => groups.some((g) => k in g.losses_s));
  return table("losses", [t("rep.losses"), ...names],
    keys.map((k) => [t(`loss.${k}_s`), ...groups.map((g) => minutes(g.losses_s[k]))]));
}

function stopTable(stops) {
  if (!stops.length) return h("p", { class: "muted" }, t("rep.none"));
  return h("table", { class: "report-table stop-table" },
    h("thead", {}, h("tr", {}, ...[t("rep.code"), t("rep.reason"), t("rep.count"), t("rep.minutes"),
      t("rep.with.reason"), t("machines")].map((x, i) => h("th", { scope: "col", class: i >= 2 && i <= 4 ? "num" : "" },
      x)))),
    h("tbody", {}, ...stops.map((s) => h("tr", { dataset: { code: s.code } },
      h("td", {}, s.code), h("td", {}, s.label), h("td", { class: "num" }, s.count),
      h("td", { class: "num" }, minutes(s.seconds)), h("td", { class: "num" }, s.with_reason),
      h("td", {}, s.machines.join(" "))))));
}

function targetText(line) {
  if (!line.target) return null;
  const verdict = line.on_target === null ? "" : ` · ${t(line.on_target ? "target.met" : "target.missed")}`;
  return h("p", { class: `report-target ${line.on_target === false ? "missed" : ""}` },
    `${t("target.oee", { value: pct(line.target.oee) })}${verdict}`);
}

function lineSection(line) {
  return h("section", { class: "report-line", dataset: { line: line.id } },
    h("h2", {}, `${t("line")} · ${line.label}`, h("span", { class: "muted small" }, ` ${line.id}`)),
    line.machines === 0 ? h("p", { class: "muted" }, t("rep.no.data")) : [
      table("figures", [t("machine"), ...keyHead()],
        [[line.label, ...keyRow(line)], ...line.machine_list.map((m) => [m.name, ...keyRow(m)])]),
      targetText(line),
      lossTable([line.label], [line]),
      h("h3", {}, t("rep.top.stops")),
      stopTable(line.top_stops),
    ]);
}

function commentsSection(report, who, params, rerender) {
  const labels = new Map(report.lines.map((l) => [l.id, l.label]));
  const list = report.comments.length
    ? h("ul", { class: "report-comments" }, ...report.comments.map((c) => h("li", {},
      h("span", { class: "muted small" }, `${new Date(c.at).toLocaleString(currentLang())} · ${c.author} · `
        + `${c.line ? labels.get(c.line) ?? c.line : t("rep.whole.site")}`), h("p", {}, c.text))))
    : h("p", { class: "muted" }, t("rep.none"));
  let form = null;
  if (may(who, "operator")) {
    const text = h("textarea", { id: "comment-text", rows: 2, maxlength: 2000, "aria-label": t("rep.comment") });
    const scope = h("select", { id: "comment-line", "aria-label": t("line") },
      h("option", { value: "" }, t("rep.whole.site")),
      ...report.lines.map((l) => h("option", { value: l.id, selected: params.line === l.id }, l.label)));
    const error = h("p", { class: "form-error", role: "alert" });
    form = h("form", { class: "comment-form no-print", id: "comment-form" },
      h("label", { for: "comment-text" }, t("rep.comment.add")), text, scope,
      h("button", { class: "btn btn-primary", type: "submit" }, t("save")), error);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        await send("POST", "reports/shift/comments", { site: params.site, shift_start: params.shift_start,
          line: scope.value || null, text: text.value });
      } catch (err) {
        error.textContent = t("save.error", { message: err.message });
        text.setAttribute("aria-invalid", "true");
        text.focus();
        return;
      }
      rerender();
    });
  }
  return h("section", { class: "report-comments-section" }, h("h2", {}, t("rep.comments")), list, form);
}

export async function report(ctx, siteId, startMs, lineId) {
  const [detail, shifts, who] = await Promise.all([
    get(`sites/${encodeURIComponent(siteId)}`),
    get("reports/shifts", { site: siteId, days: 14 }),
    me().catch(() => null),
  ]);
  if (!ctx.current()) return;
  ctx.crumbs([[detail.name || siteId, `#/site/${encodeURIComponent(siteId)}`], [t("rep.title")]]);
  const chosen = startMs ? new Date(Number(startMs)).toISOString() : shifts[0]?.start;
  if (!chosen) {
    ctx.show(h("div", { class: "card notice" }, h("p", {}, t("rep.no.shift"))));
    return;
  }
  const params = { site: siteId, shift_start: chosen, line: lineId || undefined };
  let body;
  try {
    body = await get("reports/shift", { ...params, lang: reportLang() });
  } catch (err) {
    if (!(err instanceof ApiError) || err.status === 401) throw err;
    ctx.show(h("div", { class: "card notice", role: "alert" }, h("p", {}, err.message),
      h("a", { href: base(siteId) }, t("rep.latest"))));
    return;
  }
  if (!ctx.current()) return;
  const go = (start, line) => {
    location.hash = `${base(siteId)}/${Date.parse(start)}${line ? `/${encodeURIComponent(line)}` : ""}`;
  };
  const shiftSelect = h("select", { id: "report-shift", onchange: (e) => go(e.target.value, lineId) },
    ...shifts.map((s) => h("option", { value: s.start, selected: Date.parse(s.start) === Date.parse(chosen) },
      `${s.name} · ${s.local_start.replace("T", " ")}`)));
  if (!shifts.some((s) => Date.parse(s.start) === Date.parse(chosen))) {
    shiftSelect.prepend(h("option", { value: chosen, selected: true }, `${body.shift.name} · ${body.shift.local_start}`));
  }
  const lineSelect = h("select", { id: "report-line", onchange: (e) => go(chosen, e.target.value) },
    h("option", { value: "" }, t("rep.all.lines")),
    ...detail.line_list.map((l) => h("option", { value: l.line_id, selected: l.line_id === lineId },
      l.name || l.line_id)));
  const status = h("p", { class: "small muted", role: "status" });
  const tools = h("div", { class: "report-tools card no-print" },
    h("label", { for: "report-shift" }, t("rep.shift")), shiftSelect,
    h("label", { for: "report-line" }, t("line")), lineSelect,
    h("button", { class: "btn btn-primary", type: "button", id: "report-print", onclick: () => window.print() },
      t("rep.print")),
    exportLink(params, "csv", status), exportLink(params, "pdf", status), status);
  const doc = h("article", { class: "report-doc", id: "report-doc", lang: currentLang() },
    h("header", { class: "report-head" },
      h("h1", {}, `${t("rep.title")} · ${body.site.label}`),
      h("dl", { class: "report-meta" },
        h("div", {}, h("dt", {}, t("rep.shift")), h("dd", {}, body.shift.name)),
        h("div", {}, h("dt", {}, t("rep.start")), h("dd", {}, body.shift.local_start)),
        h("div", {}, h("dt", {}, t("rep.end")), h("dd", {}, body.shift.local_end)),
        h("div", {}, h("dt", {}, t("rep.tz")), h("dd", {}, body.site.timezone)))),
    body.site_figures ? h("section", { class: "report-summary" },
      h("h2", {}, t("rep.whole.site")),
      table("figures", [t("line"), ...keyHead(), t("rep.target")],
        [[body.site.label, ...keyRow(body.site_figures), "—"],
          ...body.lines.map((l) => [l.label, ...keyRow(l), l.target ? pct(l.target.oee) : "—"])]),
      lossTable([body.site.label, ...body.lines.map((l) => l.label)], [body.site_figures, ...body.lines]),
      h("h3", {}, t("rep.top.stops")),
      stopTable(body.site_figures.top_stops)) : null,
    ...body.lines.map(lineSection),
    commentsSection(body, who, params, () => window.dispatchEvent(new HashChangeEvent("hashchange"))));
  ctx.show(h("section", { class: "report-page" }, tools, doc));
}
