// Numbers, times and state codes for display.
import { currentLang, t } from "./i18n.js";

// Category order of analytics.oee.Category (events may carry the number or the name).
export const CATEGORIES = ["running", "reduced_speed", "microstop", "failure", "setup", "material", "operator",
  "unspecified", "unknown", "planned"];
// Default role of each 10000-range of codes (DESIGN.md section 4), used when an event carries no category.
const RANGE = { 1: 0, 2: 1, 3: 8, 4: 7, 5: 2, 6: 5, 7: 5, 8: 5, 9: 5, 10: 4, 11: 4, 12: 4, 13: 4, 14: 6, 15: 9,
  16: 9, 17: 9, 18: 3, 19: 3, 20: 3, 21: 9, 22: 3 };

/** A category name from a number, a name, or (missing) the code's range. */
export function category(value, code) {
  if (typeof value === "number") return CATEGORIES[value] ?? "unknown";
  if (typeof value === "string" && value) return value.toLowerCase();
  if (typeof code === "number") return CATEGORIES[RANGE[Math.floor(code / 10000)] ?? 8];
  return "unknown";
}

/** The state's name in the current language: its base code's name. */
export function stateName(code) {
  if (code === null || code === undefined) return t("no.data");
  const base = Math.floor(code / 10000) * 10000;
  const key = `code.${base}`;
  const name = t(key);
  return name === key ? t("code.other", { code }) : name;
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
