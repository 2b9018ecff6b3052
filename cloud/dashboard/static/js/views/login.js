// Token login: the token is checked against the API and kept in sessionStorage (gone when the tab closes).
import { ApiError, get, setToken } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";

export function login(ctx) {
  ctx.crumbs(null);
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false", "aria-describedby": "login-hint" });
  const error = h("p", { class: "form-error", role: "alert" });
  const form = h("form", { class: "login card", novalidate: true },
    h("h1", {}, t("login.title")),
    h("p", { id: "login-hint", class: "muted" }, t("login.hint")),
    h("label", { for: "token" }, t("login.token")), input, error,
    h("button", { class: "btn btn-primary", type: "submit" }, t("login.submit")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    setToken(input.value.trim());
    try {
      await get("sites", {}, { silent: true });
    } catch (err) {
      setToken(null);
      error.textContent = err instanceof ApiError && err.status === 0 ? t("login.offline") : t("login.bad");
      input.focus();
      return;
    }
    ctx.signedIn();
  });
  ctx.show(h("div", { class: "login-wrap" }, form));
  input.focus();
}
