// Keys and projects, for admin keys (the page is hidden for any other key; the API answers 403).

import { api, notify, showError } from "./api.js";
import { confirmButton, field, fill, h, section, select, table, when } from "./ui.js";

export const title = "Keys & projects";

export function render(main) {
  const projectsBox = h("div", { id: "projects" });
  const keysBox = h("div", { id: "keys" });
  const secret = h("div", { id: "new-secret", "aria-live": "polite" });
  const projectFilter = select([["", "every project"]], "", { name: "project_filter" });
  const keyProject = select([], "", { name: "project_id" });

  const load = async () => {
    try {
      const [ps, ks] = await Promise.all([
        api("GET", "/api/v1/admin/projects"),
        api("GET", "/api/v1/admin/keys", { query: { project_id: projectFilter.value } }),
      ]);
      const names = Object.fromEntries(ps.map((p) => [p.id, p.name]));
      const keep = [projectFilter.value, keyProject.value];
      fill(projectFilter, h("option", { value: "" }, "every project"), ps.map((p) => h("option", { value: p.id }, p.name)));
      fill(keyProject, ps.map((p) => h("option", { value: p.id }, p.name)));
      projectFilter.value = keep[0];
      keyProject.value = keep[1] || ps.find((p) => p.is_default)?.id || ps[0]?.id || "";
      fill(projectsBox, table(["Name", "Id", "Created", ""], ps.map((p) => [
        h("span", {}, p.name, p.is_default ? h("span", { class: "badge" }, "default") : null),
        h("span", { class: "mono small" }, p.id), when(p.created_at), projectActions(p),
      ])));
      fill(keysBox, table(["Name", "Project", "Admin", "Created", "Expires", "Last used", "State", ""], ks.map((k) => [
        k.name || h("span", { class: "muted" }, "(no name)"), names[k.project_id] || k.project_id, k.is_admin ? "yes" : "no",
        when(k.created_at), when(k.expires_at), when(k.last_used_at),
        k.revoked_at ? h("span", { class: "badge failed" }, "revoked") : h("span", { class: "badge succeeded" }, "active"),
        k.revoked_at ? "" : confirmButton("Revoke", "Confirm revoke", () => act(`Revoking ${k.name || k.id}`,
          () => api("DELETE", `/api/v1/admin/keys/${encodeURIComponent(k.id)}`)), `key ${k.name || k.id}`),
      ])));
    } catch (e) {
      showError(e, "Loading keys and projects");
    }
  };

  const act = async (what, call) => {
    try {
      await call();
      notify(`${what}: done.`, "info");
    } catch (e) {
      showError(e, what);
    }
    await load();
  };

  const projectActions = (p) => {
    const input = h("input", { type: "text", value: p.name, "aria-label": `New name of project ${p.name}`, class: "short" });
    const rename = h("button", { type: "button" }, "Rename");
    rename.addEventListener("click", () => act(`Renaming ${p.name}`,
      () => api("PATCH", `/api/v1/admin/projects/${encodeURIComponent(p.id)}`, { json: { name: input.value.trim() } })));
    return h("span", { class: "actions" }, input, rename,
      p.is_default ? null : confirmButton("Delete", "Confirm delete", () => act(`Deleting ${p.name}`,
        () => api("DELETE", `/api/v1/admin/projects/${encodeURIComponent(p.id)}`)), `project ${p.name}`));
  };

  const projectName = h("input", { type: "text", name: "name", required: true, maxlength: 200 });
  const projectForm = h("form", { id: "create-project", class: "row" }, field("New project", projectName),
    h("button", { type: "submit", class: "primary" }, "Create project"));
  projectForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!projectName.value.trim()) return projectName.focus();
    act(`Creating project ${projectName.value.trim()}`,
      () => api("POST", "/api/v1/admin/projects", { json: { name: projectName.value.trim() } })).then(() => (projectName.value = ""));
  });

  const keyName = h("input", { type: "text", name: "key_name", maxlength: 200 });
  const keyAdmin = h("input", { type: "checkbox", name: "is_admin" });
  const keyDays = h("input", { type: "number", name: "expires_in_days", min: 1, max: 36500, placeholder: "never" });
  const keyForm = h("form", { id: "create-key", class: "row" },
    field("Project", keyProject), field("Name", keyName), field("Expires in days", keyDays),
    field("Admin key (may call the admin API)", keyAdmin),
    h("button", { type: "submit", class: "primary" }, "Create key"));
  keyForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const created = await api("POST", "/api/v1/admin/keys", {
        json: { project_id: keyProject.value || undefined, name: keyName.value, is_admin: keyAdmin.checked,
          expires_in_days: Number(keyDays.value) || undefined },
      });
      fill(secret, h("div", { class: "secret", role: "status" },
        h("p", {}, `Key ${created.name || created.id} created. Its secret is shown only now:`),
        h("code", { class: "mono", id: "secret-value", tabindex: 0 }, created.api_key)));
      keyName.value = "";
    } catch (err) {
      showError(err, "Creating the key");
    }
    await load();
  });
  projectFilter.addEventListener("change", load);

  main.append(h("h1", {}, "Keys & projects"),
    section("API keys", keyForm, secret, h("div", { class: "narrow" }, field("Show the keys of", projectFilter)), keysBox),
    section("Projects", projectForm, projectsBox));
  load();
}
