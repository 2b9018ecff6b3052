// Queries shared by the pages: the token's role, current-shift OEE, 24 h hourly trend, latest values.
import { get, getOr, getToken, iso } from "./api.js";

const HOUR = 3600_000;
// cloud.auth.Role: each role includes the ones before it.
const ROLES = ["viewer", "operator", "engineer", "cluster-planner", "admin"];
let mine = null;

/** The token's own name, role and sites (GET /me), asked once per token. */
export function me() {
  const token = getToken();
  if (!mine || mine.token !== token) {
    const answer = get("me").catch((err) => {
      mine = null; // ask again next time
      throw err;
    });
    mine = { token, answer };
  }
  return mine.answer;
}

/** True when `who` (an answer of me()) has `role` or a role above it. */
export function may(who, role) {
  return ROLES.indexOf(who?.role) >= ROLES.indexOf(role);
}

/** Windows of one scope ("cluster" needs no site/id) over the last `hours`. */
export function oeeWindows(scope, site, id, window, hours) {
  const now = Date.now();
  return getOr("oee", { scope, site: scope === "cluster" ? undefined : site, id,
    window, from: iso(now - hours * HOUR), to: iso(now) }, []);
}

/** The newest shift window and the hourly trend of the last 24 h. */
export async function oeeSummary(scope, site, id) {
  const [shifts, hours] = await Promise.all([
    oeeWindows(scope, site, id, "shift", 12),
    oeeWindows(scope, site, id, "hour", 24),
  ]);
  return { current: newest(shifts), trend: [...hours].sort((a, b) => Date.parse(a.start) - Date.parse(b.start)) };
}

export function newest(windows) {
  let best = null;
  for (const w of windows) if (!best || Date.parse(w.start) > Date.parse(best.start)) best = w;
  return best;
}

/** Latest value per tag name of a machine (or every machine of a site: keyed "machine/name"). */
export async function latest(site, machine) {
  const rows = await get("latest", { site, machine });
  const out = new Map();
  for (const r of rows) out.set(machine ? r.name : `${r.machine_id}/${r.name}`, r);
  return out;
}

/** Run fn at most once per `ms` per key, trailing (a burst of live events causes one refresh). */
export function throttled(ms) {
  const timers = new Map();
  const schedule = (key, fn) => {
    if (timers.has(key)) return;
    timers.set(key, setTimeout(() => {
      timers.delete(key);
      fn();
    }, ms));
  };
  schedule.cancel = () => {
    for (const t of timers.values()) clearTimeout(t);
    timers.clear();
  };
  return schedule;
}
