// Numbers, times and state codes for display; the state catalogue comes from the API (GET state-codes).
import { get } from "./api.js";
import { currentLang, t } from "./i18n.js";

// Category names in the order of analytics.oee.Category (events may carry the number or the name).
export let CATEGORIES = [];
let codes = new Map(); // base code -> { code, name, name_zh, category }
let loading = null;

/** Fetch the state-code catalogue once per page load (again after a failure). */
export function loadStates() {
  loading ??= get("state-codes").then((body) => {
    CATEGORIES = body.categories;
    codes = new Map(body.codes.map((c) => [c.code, c]));
  }).catch((err) => {
    loading = null;
    throw err;
  });
  return loading;
}

const entry = (code) => codes.get(Math.floor(code / 10000) * 10000);

/** A category name from a number, a name, or (missing) the code's default category. */
export function category(value, code) {
  if (typeof value === "number") return CATEGORIES[value] ?? "unknown";
  if (typeof value === "string" && value) return value.toLowerCase();
  if (typeof code === "number") return entry(code)?.category ?? "unknown";
  return "unknown";
}

/** The state's name in the current language: its base code's name. */
export function stateName(code) {
  if (code === null || code === undefined) return t("no.data");
  const e = entry(code);
  if (!e) return t("code.other", { code });
  if (currentLang() === "zh-CN") return e.name_zh;
  return e.name.charAt(0).toUpperCase() + e.name.slice(1);
}

/** A fraction as a percentage ("74.8 %"), or an em dash. */
export function pct(x, digits = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return "—";
  return `${(x * 100).toFixed(digits)} %`;
}

export function num(x) {
  if (x === null || x === undefined || x === "") return "—";
  return new Intl.NumberFormat(currentLang(), { maximumFractionDigits: 1 }).format(x);
}

/** Local wall-clock time of the browser (the shop floor's). */
export function clock(ms) {
  return new Date(ms).toLocaleTimeString(currentLang(), { hour: "2-digit", minute: "2-digit" });
}

export function duration(seconds) {
  return seconds >= 5400 ? t("hours", { n: num(seconds / 3600) }) : t("minutes", { n: num(seconds / 60) });
}

/** An epoch-ms number from an ISO string or a number. */
export function ms(value) {
  return typeof value === "number" ? value : Date.parse(value);
}

/** Colour band of an OEE figure: good (>= 85 %), fair (>= 60 %), poor. */
export function band(x) {
  if (x === null || x === undefined) return "none";
  return x >= 0.85 ? "good" : x >= 0.6 ? "fair" : "poor";
}

/** "3 lines" / "1 line" in the current language; `what` is site, line or machine. */
export function count(n, what) {
  return t(n === 1 ? `count.${what}` : `count.${what}s`, { n });
}

/** The display name of a site, line or machine (from the seeds), else its id. */
export function label(obj, id) {
  return obj?.name && obj.name !== id ? obj.name : id;
}
