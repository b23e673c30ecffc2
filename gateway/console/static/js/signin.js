// Sign in with an API key: checked against the gateway, then kept for this tab only.

import { ApiError, api, message, session } from "./api.js";
import { field, h } from "./ui.js";

export const title = "Sign in";

/** Whether a key may use the admin API: 200 from an admin route, 403 for any other key. */
async function isAdmin(key) {
  try {
    await api("GET", "/api/v1/admin/projects", { key });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}

export function render(main) {
  const input = h("input", {
    type: "password", name: "api-key", required: true, autocomplete: "off", spellcheck: "false",
    placeholder: "qk-…",
  });
  const error = h("p", { class: "form-error", role: "alert", id: "signin-error" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", "aria-labelledby": "signin-title", novalidate: true },
    h("h1", { id: "signin-title" }, "Sign in to Quarry"),
    h("p", {}, "Paste an API key of your project. ", h("code", {}, "quarry up"), " prints the local stack's admin key and keeps it in ",
      h("code", {}, ".quarry/api_key"), "."),
    field("API key", input, "Kept in this browser tab only (sessionStorage) and sent as Authorization: Bearer on every call."),
    error,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    error.textContent = "";
    if (!key) {
      error.textContent = "Enter an API key.";
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const [project] = await api("GET", "/api/v1/projects", { key });
      session.set({ key, project: project?.name || "?", projectId: project?.id, isAdmin: await isAdmin(key) });
      location.hash = "#/indexes";
    } catch (e) {
      error.textContent = `Sign-in failed: ${message(e)}`;
      input.setAttribute("aria-invalid", "true");
      input.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(form);
  input.focus();
}
