// The REST API at ../api/v1/ (relative, so the app also works under a root path), with the session's token.
export const API = new URL("../api/v1/", location.href);
const KEY = "zhizao.token";

export class ApiError extends Error {
  /** `field` and `value`: what the API named as wrong (400s), when it did. */
  constructor(status, message, field = null, value = null) {
    super(message);
    this.status = status;
    this.field = field;
    this.value = value;
  }
}

export function getToken() {
  return sessionStorage.getItem(KEY);
}

export function setToken(token) {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

function url(path, params = {}) {
  const u = new URL(path.replace(/^\//, ""), API);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.searchParams.set(k, v);
  return u;
}

/** GET a JSON resource; throws ApiError with the API's message (which names the field and value). */
export function get(path, params = {}, { signal, silent = false } = {}) {
  return request("GET", url(path, params), undefined, { signal, silent });
}

/** PUT or POST a JSON body; the answer's JSON, or ApiError with the API's message, field and value. */
export function send(method, path, body) {
  return request(method, url(path), body, {});
}

async function request(method, target, body, { signal, silent = false }) {
  const headers = { Authorization: `Bearer ${getToken() ?? ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(target, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, err.message);
  }
  if (!res.ok) {
    let error = {};
    try {
      error = (await res.json()).error ?? {};
    } catch { /* not JSON */ }
    if (res.status === 401 && !silent) window.dispatchEvent(new CustomEvent("zhizao:unauthorized"));
    throw new ApiError(res.status, error.message ?? `HTTP ${res.status}`, error.field ?? null, error.value ?? null);
  }
  return res.json();
}

/** Like get(), but `fallback` for 404 (a route or object that is not there yet) instead of an error. */
export async function getOr(path, params, fallback, opts) {
  try {
    return await get(path, params, opts);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return fallback;
    throw err;
  }
}

/** The URL of the live stream; the token goes in the query because EventSource cannot send headers. */
export function liveUrl() {
  return url("live", { token: getToken() }).href;
}

export const iso = (ms) => new Date(ms).toISOString();
