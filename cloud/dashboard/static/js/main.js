// The app shell: hash router, header (breadcrumbs, live status, language, logout), page life cycle.
import { ApiError, getToken, setToken } from "./api.js";
import { disposeCharts } from "./charts.js";
import { h } from "./dom.js";
import { loadStates } from "./format.js";
import { LANGS, currentLang, preferredLang, setLang, t, translate } from "./i18n.js";
import * as live from "./live.js";
import { calendar } from "./views/calendar.js";
import { fleet, fleetNode } from "./views/fleet.js";
import { line } from "./views/line.js";
import { login } from "./views/login.js";
import { machine } from "./views/machine.js";
import { overview } from "./views/overview.js";
import { report } from "./views/report.js";
import { planning } from "./views/planning.js";
import { site } from "./views/site.js";
import { alarms } from "./views/alarms.js";
import { workOrders } from "./views/workorders.js";
import { alarmBadge } from "./badge.js";

const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const liveEl = document.getElementById("live");
const langBtn = document.getElementById("lang");
const logoutBtn = document.getElementById("logout");
let liveState = "off";
let page = 0;
let cleanups = [];

// #/ | #/site/S | #/site/S/calendar | #/site/S/line/L | #/site/S/machine/M | #/fleet | #/fleet/S/E
function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return [overview];
  if (parts[0] === "planning" && parts.length === 1) return [planning];
  if (parts[0] === "alarms" && parts.length === 1) return [alarms];
  if (parts[0].split("?")[0] === "work-orders" && parts.length === 1) {
    return [workOrders, new URLSearchParams(parts[0].split("?")[1] ?? "")];
  }
  if (parts[0] === "site" && parts.length === 2) return [site, parts[1]];
  if (parts[0] === "site" && parts.length === 3 && parts[2] === "calendar") return [calendar, parts[1]];
  if (parts[0] === "site" && parts.length === 4 && parts[2] === "line") return [line, parts[1], parts[3]];
  if (parts[0] === "site" && parts.length === 4 && parts[2] === "machine") return [machine, parts[1], parts[3]];
  // #/site/S/report[/START_MS[/LINE]]: the shift report (views/report.js)
  if (parts[0] === "site" && parts.length >= 3 && parts.length <= 5 && parts[2] === "report") {
    return [report, parts[1], parts[3], parts[4]];
  }
  if (parts[0] === "site" && parts.length === 5 && parts[2] === "line" && parts[4] === "report") {
    return [report, parts[1], undefined, parts[3]];
  }
  if (parts[0] === "fleet" && parts.length === 1) return [fleet];
  if (parts[0] === "fleet" && parts.length === 3) return [fleetNode, parts[1], parts[2]];
  return null;
}

function setCrumbs(items) {
  if (items === null) {
    crumbs.replaceChildren();
    return;
  }
  const all = [[t("cluster"), items.length ? "#/" : null], ...items];
  crumbs.replaceChildren(h("ol", {}, ...all.map(([label, href], i) => h("li", {},
    href && i < all.length - 1 ? h("a", { href }, label) : h("span", { "aria-current": "page" }, label)))));
}

function showLive(state) {
  liveState = state;
  liveEl.className = `live live-${state}`;
  liveEl.textContent = t(`live.${state}`);
}

async function render() {
  const id = ++page;
  for (const fn of cleanups) fn();
  cleanups = [];
  disposeCharts();
  const ctx = {
    view,
    current: () => id === page,
    show: (...nodes) => {
      if (id === page) view.replaceChildren(...nodes);
    },
    crumbs: setCrumbs,
    live: (fn) => cleanups.push(live.listen(fn)),
    onLeave: (fn) => cleanups.push(fn),
    signedIn: () => start(),
  };
  logoutBtn.hidden = !getToken();
  if (!getToken()) {
    live.disconnect();
    liveEl.textContent = "";
    liveEl.className = "live";
    login(ctx);
    return;
  }
  const found = route();
  view.setAttribute("aria-busy", "true");
  if (!view.firstChild) view.replaceChildren(h("p", { class: "muted" }, t("loading")));
  try {
    if (!found) throw new ApiError(404, t("not.found"));
    const [fn, ...args] = found;
    await loadStates();
    await fn(ctx, ...args);
  } catch (err) {
    if (id !== page) return;
    if (err instanceof ApiError && err.status === 401) return;
    setCrumbs([[t("not.found")]]);
    ctx.show(h("div", { class: "card notice", role: "alert" },
      h("p", {}, err instanceof ApiError && err.status === 404 ? t("not.found") : t("error", { message: err.message })),
      h("a", { href: "#/" }, t("back.overview"))));
  } finally {
    if (id === page) view.removeAttribute("aria-busy");
  }
}

function start() {
  live.connect(showLive);
  alarmBadge.start();
  logoutBtn.hidden = false;
  render(); // the page that was asked for before the login
}

function paintHeader() {
  translate();
  const other = LANGS.find((l) => l !== currentLang());
  langBtn.textContent = t("lang.switch");
  langBtn.setAttribute("lang", other);
  langBtn.setAttribute("aria-label", t("lang.switch.label"));
  if (liveEl.textContent) showLive(liveState);
  alarmBadge.paint();
}

langBtn.addEventListener("click", async () => {
  await setLang(LANGS.find((l) => l !== currentLang()));
  paintHeader();
  view.replaceChildren();
  render();
});
logoutBtn.addEventListener("click", () => {
  alarmBadge.stop();
  setToken(null);
  location.hash = "#/";
  render();
});
window.addEventListener("hashchange", () => {
  view.replaceChildren();
  render();
  view.focus({ preventScroll: true });
});
window.addEventListener("zhizao:unauthorized", () => {
  setToken(null);
  render();
});

await setLang(preferredLang());
paintHeader();
if (getToken()) {
  live.connect(showLive);
  alarmBadge.start();
}
render();
