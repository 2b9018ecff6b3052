// Command panel of the machine page: what the machine's edge agent may be commanded (its targets and limits),
// buttons by role, a confirmation dialog with the reason, and the command's live status until it ends.
import { ApiError, get, send } from "../api.js";
import { may } from "../data.js";
import { h } from "../dom.js";
import { clock } from "../format.js";
import { t } from "../i18n.js";

const FINAL = new Set(["confirmed", "failed", "refused", "timed_out", "expired", "cancelled"]);
const POLL_MS = 250;

const statusBadge = (status) => h("span", { class: `cmd-status cmd-${status}`, dataset: { status } },
  t(`cmd.status.${status}`));

function describe(c) {
  const what = c.kind === "call" ? t(`cmd.method.${c.name.replace("Method/", "")}`) : `${c.name} = ${c.value}`;
  return what;
}

/** The panel (an element) for one machine; `who` is GET /me. Returns null for a machine without targets. */
export async function commandPanel({ siteId, machineId, who, onLeave }) {
  const q = { site: siteId };
  const m = encodeURIComponent(machineId);
  const targets = await get(`machines/${m}/command-targets`, q).catch(() => []);
  if (!targets.length) return null;
  const list = h("ul", { class: "cmd-list", id: "cmd-list" });
  const statusEl = h("p", { class: "cmd-live", id: "cmd-live", role: "status", "aria-live": "polite" });
  const dialog = h("dialog", { class: "cmd-dialog", id: "cmd-dialog" });
  let timer = null;
  let stopped = false;
  onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });

  async function refreshList() {
    const rows = await get(`machines/${m}/commands`, { ...q, limit: 6 }).catch(() => []);
    if (stopped) return;
    list.replaceChildren(...rows.map((c) => h("li", { dataset: { commandId: c.command_id } },
      statusBadge(c.status), " ", h("span", {}, describe(c)), " ",
      h("small", { class: "muted" }, `${clock(Date.parse(c.created_at))} · ${c.requested_by}`),
      c.message ? h("small", { class: "cmd-message" }, ` ${c.message}`) : null,
      c.status === "awaiting_approval" && c.requested_by !== who?.name && may(who, "engineer")
        ? h("button", { class: "btn btn-small", type: "button", onclick: () => approve(c) }, t("cmd.approve")) : null)));
  }

  async function follow(id) {
    clearTimeout(timer);
    const c = await get(`commands/${id}`).catch(() => null);
    if (stopped || !c) return;
    statusEl.replaceChildren(statusBadge(c.status), " ", describe(c),
      c.readback !== null && c.readback !== undefined ? ` · ${t("cmd.readback", { value: c.readback })}` : "",
      c.message && c.status !== "confirmed" ? ` · ${c.message}` : "");
    statusEl.dataset.status = c.status;
    if (!FINAL.has(c.status) && c.status !== "awaiting_approval") timer = setTimeout(() => follow(id), POLL_MS);
    refreshList();
  }

  async function approve(c) {
    try {
      await send("POST", `commands/${c.command_id}/approve`, {});
      follow(c.command_id);
    } catch (err) {
      statusEl.textContent = err.message;
    }
  }

  /** Ask for confirmation and a reason, then send. */
  function confirm(body, text) {
    const reason = h("input", { id: "cmd-reason", maxlength: 500, "aria-label": t("cmd.reason") });
    const error = h("p", { class: "cmd-error", role: "alert" });
    const ok = h("button", { class: "btn btn-primary", type: "submit", id: "cmd-confirm" }, t("cmd.confirm"));
    const cancel = h("button", { class: "btn", type: "button", onclick: () => dialog.close() }, t("cmd.cancel"));
    const form = h("form", { method: "dialog" },
      h("h3", {}, t("cmd.confirm.title")), h("p", { class: "cmd-what" }, text),
      h("label", {}, t("cmd.reason"), reason), error, h("div", { class: "cmd-actions" }, cancel, ok));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!reason.value.trim()) {
        error.textContent = t("cmd.reason.needed");
        return;
      }
      try {
        const c = await send("POST", `machines/${m}/commands?site=${encodeURIComponent(siteId)}`,
          { ...body, reason: reason.value.trim(), idempotency_key: crypto.randomUUID() });
        dialog.close();
        follow(c.command_id);
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.message : String(err);
      }
    });
    dialog.replaceChildren(form);
    dialog.showModal();
    reason.focus();
  }

  const controls = [];
  for (const tg of targets) {
    const allowed = may(who, tg.role);
    if (tg.kind === "call") {
      const method = tg.name.replace("Method/", "");
      if (!allowed) continue;
      controls.push(h("button", { class: `btn cmd-btn cmd-${method.toLowerCase()}`, type: "button",
        dataset: { method }, onclick: () => confirm({ method }, t(`cmd.method.${method}`)
          + (tg.critical ? ` (${t("cmd.critical")})` : "")) }, t(`cmd.method.${method}`)));
    } else if (allowed) {
      const input = h("input", { type: "number", class: "cmd-value", id: `cmd-value-${tg.name.replace(/\W/g, "-")}`,
        min: tg.min_value ?? undefined, max: tg.max_value ?? undefined, step: tg.step ?? "any",
        "aria-label": tg.name });
      const limits = [tg.min_value !== null ? `≥ ${tg.min_value}` : null, tg.max_value !== null ? `≤ ${tg.max_value}` : null,
        tg.step ? t("cmd.step", { step: tg.step }) : null].filter(Boolean).join(", ");
      controls.push(h("div", { class: "cmd-write" }, h("label", {}, tg.name, " ", input),
        h("small", { class: "muted" }, limits),
        h("button", { class: "btn cmd-set", type: "button", dataset: { metric: tg.name },
          onclick: () => confirm({ metric: tg.name, value: Number(input.value) }, `${tg.name} = ${input.value}`) },
          t("cmd.set"))));
    }
  }
  await refreshList();
  return h("div", { class: "card m-commands", id: "commands" },
    h("h2", { class: "card-title" }, t("cmd.title")),
    controls.length ? h("div", { class: "cmd-controls" }, ...controls) : h("p", { class: "muted" }, t("cmd.viewer")),
    statusEl, list, dialog);
}
