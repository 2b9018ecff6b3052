// The alarm count in the header of every page: open alarms of the token's sites (unacknowledged ones stand out),
// re-read from /api/v1/alarms/summary when an alarm event arrives (at most once a second).
import { get } from "./api.js";
import { throttled } from "./data.js";
import { t } from "./i18n.js";
import * as live from "./live.js";

const el = () => document.getElementById("alarm-badge");
let summary = null;
let unlisten = null;
const again = throttled(1_000);

async function load() {
  try {
    summary = await get("alarms/summary", {}, { silent: true });
  } catch {
    summary = null;
  }
  paint();
}

function paint() {
  const badge = el();
  if (!badge) return;
  badge.hidden = summary === null;
  if (summary === null) return;
  badge.textContent = t("alarms.badge", { open: summary.open, unack: summary.unacknowledged });
  badge.dataset.open = String(summary.open);
  badge.dataset.unack = String(summary.unacknowledged);
  badge.classList.toggle("alarm-badge-hot", summary.unacknowledged > 0);
  badge.setAttribute("aria-label", t("alarms.badge.label", { open: summary.open, unack: summary.unacknowledged }));
}

export const alarmBadge = {
  start() {
    unlisten?.();
    unlisten = live.listen((kind) => {
      if (kind === "alarm") again("badge", load);
    });
    load();
  },
  stop() {
    unlisten?.();
    unlisten = null;
    again.cancel();
    summary = null;
    paint();
  },
  paint,
};
