// English and Simplified Chinese: our own dictionaries (../i18n/*.json), chosen once and kept in localStorage.
export const LANGS = ["en", "zh-CN"];
const KEY = "zhizao.lang";
let lang = "en";
let dict = {};

/** The language in use. */
export function currentLang() {
  return lang;
}

/** The saved language, else the browser's when it is Chinese, else English. */
export function preferredLang() {
  const saved = localStorage.getItem(KEY);
  if (LANGS.includes(saved)) return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

/** Load a dictionary and make it current. */
export async function setLang(next) {
  if (!LANGS.includes(next)) next = "en";
  const res = await fetch(`i18n/${next}.json`, { cache: "no-cache" });
  if (!res.ok) throw new Error(`dictionary ${next}: HTTP ${res.status}`);
  dict = await res.json();
  lang = next;
  localStorage.setItem(KEY, next);
  document.documentElement.lang = next;
}

/** The text for `key`, with {name} placeholders filled from `vars`; the key itself when missing. */
export function t(key, vars = {}) {
  const text = dict[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/** Fill the static texts marked with data-i18n (text) and data-i18n-label (aria-label). */
export function translate(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
}
