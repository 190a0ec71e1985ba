// Users (admins), project members and roles (owners), the user's own API tokens.
import {api, clear, confirmAction, describe, dialog, field, flash, form, h, input, select,
  when} from "./h.js";
import {session} from "./app.js";
import {can, projectPage, projectRole} from "./project.js";

const ROLES = [["owner", "Owner"], ["manager", "Manager"], ["task_runner", "Task runner"],
  ["guest", "Guest"]];

export async function usersPage() {
  const page = document.getElementById("page");
  if (!session.user.admin) {
    clear(page, h("p", "Only admins manage users."));
    return;
  }
  const users = await api("GET", "/api/users");
  clear(page, h("div.page-head", h("h1", "Users"),
    h("button.primary", {type: "button", onclick: () => edit({})}, "New user")),
  h("div.table-wrap", h("table", h("thead", h("tr", ["Username", "Name", "Email", "Admin", "Actions"]
    .map((t) => h("th", {scope: "col"}, t)))),
  h("tbody", users.map((u) => h("tr", {"data-user": u.id}, h("th", {scope: "row"}, u.username),
    h("td", u.name), h("td", u.email), h("td", u.admin ? "yes" : ""),
    h("td.buttons", h("button", {type: "button", onclick: () => edit(u)}, "Edit"),
      h("button", {type: "button", onclick: () => password(u)}, "Set password"),
      u.id !== session.user.id ? h("button.danger", {type: "button", onclick: () => remove(u)},
        "Delete") : null)))))));

  function edit(u) {
    const fields = [field("Username", input("username", {value: u.username || "",
      autocomplete: "off"})),
    field("Name", input("name", {value: u.name || ""})),
    field("Email", input("email", {type: "email", value: u.email || ""}))];
    if (!u.id) fields.push(field("Password", input("password", {type: "password",
      autocomplete: "new-password"}), "at least 8 characters"));
    fields.push(h("div.field.check", {"data-field": "admin"}, h("label",
      h("input", {type: "checkbox", name: "admin", checked: u.admin}), " Admin"), h("div.field-error")));
    const f = form(fields, u.id ? "Save" : "Create", async (v) => {
      const body = {username: v.username, name: v.name, email: v.email, admin: v.admin};
      if (u.id) await api("PUT", `/api/users/${u.id}`, body);
      else await api("POST", "/api/users", {...body, password: v.password});
      d.close();
      await usersPage();
    });
    const d = dialog(u.id ? `Edit ${u.username}` : "New user", f);
    d.querySelector("input").focus();
  }

  function password(u) {
    const f = form([field("New password", input("password", {type: "password",
      autocomplete: "new-password"}), "at least 8 characters"),
    h("div.field.check", {"data-field": "revoke_tokens"}, h("label", h("input", {type: "checkbox",
      name: "revoke_tokens"}), " Also revoke the user's API tokens"), h("div.field-error"))],
    "Set password", async (v) => {
      await api("POST", `/api/users/${u.id}/password`, {password: v.password,
        revoke_tokens: v.revoke_tokens});
      d.close();
      flash(`Password of ${u.username} changed.`, "ok");
    });
    const d = dialog(`Password of ${u.username}`, f);
    d.querySelector("input").focus();
  }

  async function remove(u) {
    if (!(await confirmAction(`Delete user "${u.username}"?`))) return;
    try { await api("DELETE", `/api/users/${u.id}`); } catch (err) { flash(describe(err)); }
    await usersPage();
  }
}

export async function membersPage(projectId) {
  // The project header and tabs, then the members in its content area.
  const content = await projectPage(projectId, "members-shell");
  for (const a of content.parentElement.querySelectorAll(".tabs a")) {
    if (a.getAttribute("href").endsWith("/members")) a.setAttribute("aria-current", "page");
  }
  const role = await projectRole(projectId);
  const owner = can(role, "owner");
  const base = `/api/project/${projectId}/users`;
  const members = await api("GET", base);
  const rows = members.map((m) => h("tr", {"data-member": m.id},
    h("th", {scope: "row"}, m.username), h("td", m.name),
    h("td", owner ? roleSelect(m) : m.role),
    h("td.buttons", owner ? h("button.danger", {type: "button", onclick: () => remove(m)}, "Remove")
      : null)));
  let adder = null;
  if (owner) {
    let userField;
    try {
      const users = await api("GET", "/api/users");
      const ids = new Set(members.map((m) => m.id));
      userField = select("user_id", users.filter((u) => !ids.has(u.id)).map((u) => [u.id, u.username]));
    } catch {
      userField = input("user_id", {type: "number", min: 1});
    }
    adder = form([field("User", userField), field("Role", select("role", ROLES, "guest"))],
      "Add member", async (v) => {
        await api("POST", base, {user_id: Number(v.user_id), role: v.role});
        await membersPage(projectId);
      });
  }
  clear(content, h("h2", "Members"), h("div.table-wrap", h("table",
    h("thead", h("tr", ["Username", "Name", "Role", "Actions"].map((t) => h("th", {scope: "col"}, t)))),
    h("tbody", rows))), adder ? h("section", h("h3", "Add a member"), adder) : null);

  function roleSelect(m) {
    const s = select("role", ROLES, m.role);
    s.setAttribute("aria-label", `Role of ${m.username}`);
    s.addEventListener("change", async () => {
      try {
        await api("PUT", `${base}/${m.id}`, {role: s.value});
        flash(`${m.username} is now ${s.value}.`, "ok");
      } catch (err) {
        flash(describe(err));
        s.value = m.role;
      }
    });
    return s;
  }

  async function remove(m) {
    if (!(await confirmAction(`Remove ${m.username} from the project?`, "Remove"))) return;
    try { await api("DELETE", `${base}/${m.id}`); } catch (err) { flash(describe(err)); }
    await membersPage(projectId);
  }
}

export async function tokensPage() {
  const page = document.getElementById("page");
  const tokens = await api("GET", "/api/user/tokens");
  const created = h("div#created-token");
  const own = form([field("New password", input("password", {type: "password",
    autocomplete: "new-password"}), "at least 8 characters; your other sessions end")],
  "Change my password", async (v, f) => {
    await api("POST", `/api/users/${session.user.id}/password`, {password: v.password});
    f.reset();
    flash("Your password was changed.", "ok");
  });
  clear(page, h("div.page-head", h("h1", "API tokens"),
    h("button.primary", {type: "button", onclick: create}, "New token")), created,
  h("div.table-wrap", h("table", h("thead", h("tr", ["Token", "Created", "State", "Actions"]
    .map((t) => h("th", {scope: "col"}, t)))),
  h("tbody", tokens.length ? tokens.map((t) => h("tr", h("th", {scope: "row"}, h("code", t.id)),
    h("td", when(t.created)), h("td", t.expired ? "revoked" : "valid"),
    h("td.buttons", t.expired ? null : h("button.danger", {type: "button",
      onclick: () => revoke(t)}, "Revoke"))))
    : h("tr", h("td", {colspan: 4}, "No tokens."))))),
  h("section", h("h2", "Your password"), own));

  async function create() {
    try {
      const t = await api("POST", "/api/user/tokens");
      await tokensPage();
      clear(document.getElementById("created-token"), h("div.notice",
        h("p", "Your new token, shown only this once:"), h("code.token", t.id)));
    } catch (err) {
      flash(describe(err));
    }
  }

  async function revoke(t) {
    if (!(await confirmAction("Revoke this token? Scripts using it stop working.", "Revoke"))) return;
    try { await api("DELETE", `/api/user/tokens/${encodeURIComponent(t.id)}`); } catch (err) {
      flash(describe(err));
    }
    await tokensPage();
  }
}
