// Fleet console: every edge agent (status, versions, outbox, rates, clock, errors, devices), refreshed live;
// one agent's page holds its config versions with diffs, push / roll back, and the push history.
import { ApiError, get, send } from "../api.js";
import { may, me } from "../data.js";
import { h } from "../dom.js";
import { clock, num } from "../format.js";
import { t } from "../i18n.js";

const REFRESH_MS = 2000;

const badge = (status) => h("span", { class: `fleet-status fleet-${status}`, dataset: { status } },
  t(`fleet.status.${status}`));
const age = (s) => (s === null || s === undefined ? "–" : s < 120 ? `${s.toFixed(0)} s` : `${(s / 60).toFixed(0)} min`);

function row(n) {
  const href = `#/fleet/${encodeURIComponent(n.site_id)}/${encodeURIComponent(n.edge_node_id)}`;
  const devices = n.devices.map((d) => h("span", { class: `fleet-dev ${d.online ? "on" : "off"}`, title: d.machine_id },
    d.machine_id));
  const errors = n.last_errors.length ? n.last_errors.at(-1).error : "";
  return h("tr", { dataset: { edge: n.edge_node_id, site: n.site_id } },
    h("td", {}, h("a", { href }, `${n.site_id} / ${n.edge_node_id}`)), h("td", {}, badge(n.status)),
    h("td", {}, n.agent_version ?? "–"), h("td", { class: "mono" }, n.config_version ?? "–"),
    h("td", { class: "num" }, num(n.outbox_depth)), h("td", { class: "num" }, age(n.outbox_oldest_age_s)),
    h("td", { class: "num", dataset: { rate: n.samples_per_s } }, num(Math.round(n.samples_per_s))),
    h("td", { class: "num" }, num(n.reconnects)),
    h("td", { class: "num" }, n.clock_skew_ms === null ? "–" : `${n.clock_skew_ms} ms`),
    h("td", { class: "fleet-devs" }, ...devices), h("td", { class: "fleet-err", title: errors }, errors));
}

export async function fleet(ctx) {
  ctx.crumbs([[t("fleet.title")]]);
  const body = h("tbody", {});
  const table = h("table", { class: "fleet", id: "fleet" },
    h("thead", {}, h("tr", {}, ...["fleet.node", "fleet.status", "fleet.agent", "fleet.config", "fleet.outbox",
      "fleet.oldest", "fleet.rate", "fleet.reconnects", "fleet.skew", "fleet.devices", "fleet.errors"]
      .map((k) => h("th", { scope: "col" }, t(k))))), body);
  let timer = null;
  ctx.onLeave(() => clearTimeout(timer));
  async function paint() {
    const nodes = await get("fleet").catch(() => null);
    if (!ctx.current()) return;
    if (nodes) body.replaceChildren(...nodes.map(row));
    timer = setTimeout(paint, REFRESH_MS);
  }
  await paint();
  ctx.show(h("section", { class: "fleet-page" }, h("h1", { class: "page-title" }, t("fleet.title")),
    h("div", { class: "card" }, table)));
}

function diffView(text) {
  return h("pre", { class: "diff", id: "config-diff" }, ...text.split("\n").map((line) =>
    h("span", { class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "" }, `${line}\n`)));
}

export async function fleetNode(ctx, siteId, edge) {
  const base = `fleet/${encodeURIComponent(siteId)}/${encodeURIComponent(edge)}`;
  const [node, who] = await Promise.all([get(base), me().catch(() => null)]);
  if (!ctx.current()) return;
  ctx.crumbs([[t("fleet.title"), "#/fleet"], [`${siteId} / ${edge}`]]);
  const engineer = may(who, "engineer");
  const versions = h("ul", { class: "cfg-versions", id: "config-versions" });
  const pushes = h("ul", { class: "cfg-pushes", id: "config-pushes" });
  const detail = h("div", { class: "cfg-detail" });
  const statusEl = h("p", { id: "config-status", role: "status", "aria-live": "polite" });
  let timer = null;
  ctx.onLeave(() => clearTimeout(timer));

  async function paintPushes() {
    const rows = await get(`${base}/pushes`).catch(() => []);
    if (!ctx.current()) return;
    pushes.replaceChildren(...rows.map((p) => h("li", { dataset: { status: p.status, version: p.version } },
      h("span", { class: `cmd-status cmd-${p.status}` }, t(`cfg.status.${p.status}`)), ` v${p.version} · `,
      h("small", { class: "muted" }, `${clock(Date.parse(p.created_at))} · ${p.requested_by}`),
      p.message ? h("small", {}, ` ${p.message}`) : null)));
    if (rows.some((p) => ["queued", "sent", "delivered"].includes(p.status))) timer = setTimeout(paintPushes, 500);
  }

  async function show(version, latest) {
    const v = await get(`${base}/configs/${version}`);
    const pushBtn = engineer ? h("button", { class: "btn btn-primary", type: "button", id: "config-push",
      onclick: async () => {
        try {
          await send("POST", `${base}/configs/${version}/push`, { rollback_after_s: 60 });
          statusEl.textContent = t("cfg.pushed", { version });
          paintPushes();
        } catch (err) {
          statusEl.textContent = err.message;
        }
      } }, version === latest ? t("cfg.push") : t("cfg.rollback", { version })) : null;
    detail.replaceChildren(h("h3", {}, `v${v.version}`, " ", h("small", { class: "muted" },
      `${v.created_by} · ${clock(Date.parse(v.created_at))}${v.comment ? ` · ${v.comment}` : ""}`)),
      pushBtn, h("h4", {}, t("cfg.diff")), diffView(v.diff || t("cfg.nodiff")));
  }

  async function paintVersions() {
    const rows = await get(`${base}/configs`).catch(() => []);
    if (!ctx.current()) return;
    const latest = rows[0]?.version;
    versions.replaceChildren(...rows.map((v) => h("li", {},
      h("button", { class: "btn btn-small", type: "button", dataset: { version: v.version },
        onclick: () => show(v.version, latest) }, `v${v.version}`), " ",
      h("small", { class: "muted" }, `${v.created_by} · ${clock(Date.parse(v.created_at))}`))));
    if (latest) await show(latest, latest);
  }

  const upload = engineer ? (() => {
    const text = h("textarea", { id: "config-text", rows: 8, "aria-label": t("cfg.document"), spellcheck: "false" });
    const comment = h("input", { id: "config-comment", "aria-label": t("cfg.comment"), placeholder: t("cfg.comment") });
    const error = h("pre", { class: "cmd-error", id: "config-error", role: "alert" });
    const btn = h("button", { class: "btn", type: "button", id: "config-upload", onclick: async () => {
      error.textContent = "";
      try {
        const v = await send("POST", `${base}/configs`, { document: text.value, comment: comment.value || null });
        statusEl.textContent = t("cfg.uploaded", { version: v.version });
        await paintVersions();
      } catch (err) {
        error.textContent = err instanceof ApiError ? err.message.replace(/; /g, "\n") : String(err);
      }
    } }, t("cfg.upload"));
    return h("div", { class: "card" }, h("h2", { class: "card-title" }, t("cfg.new")), text, comment, btn, error);
  })() : null;

  await Promise.all([paintVersions(), paintPushes()]);
  ctx.show(h("section", { class: "fleet-node" },
    h("h1", { class: "page-title" }, `${siteId} / ${edge}`, " ", badge(node.status)),
    h("div", { class: "card" }, h("h2", { class: "card-title" }, t("cfg.versions")), versions, detail, statusEl),
    h("div", { class: "card" }, h("h2", { class: "card-title" }, t("cfg.pushes")), pushes), upload));
}
