// A project's integrations (Semaphore's): webhooks that start a template's task. The list
// shows each one's webhook URL to copy into the sender (GitHub, GitLab, ...); the dialog
// edits the integration, its matchers (which payloads start a task) and its extract values
// (what of the payload the task gets).
import {api, clear, confirmAction, describe, dialog, field, flash, form, h, input,
  select} from "./h.js";
import {can} from "./project.js";

const AUTH = [["", "None"], ["github", "GitHub signature (X-Hub-Signature-256)"],
  ["bitbucket", "Bitbucket signature (X-Hub-Signature)"],
  ["hmac", "HMAC-SHA256 signature in a header"], ["token", "Token in a header"]];
const authLabel = (method) => (AUTH.find(([m]) => m === (method === "none" ? "" : method)) ||
  [null, method])[1].split(" (")[0];

function check(name, label, checked) {
  return h("div.field.check", {"data-field": name},
    h("label", h("input", {type: "checkbox", name, checked}), " ", label), h("div.field-error"));
}

function copyUrl(url) {
  const box = h("input.webhook-url", {type: "text", readonly: true, value: url,
    "aria-label": "Webhook URL", onfocus: (e) => e.target.select()});
  const copy = h("button.small", {type: "button", onclick: async () => {
    try {
      await navigator.clipboard.writeText(url);
      copy.textContent = "Copied";
    } catch {
      box.select();  // no clipboard access (plain http): selected for Ctrl+C
    }
  }}, "Copy");
  return h("div.copy-url", box, copy);
}

export async function integrationsPage(ctx) {
  const base = `${ctx.base}/integrations`;
  const manage = can(ctx.role, "manager");
  const [rows, templates] = await Promise.all([api("GET", base), api("GET", `${ctx.base}/templates`)]);
  // Aliases let anyone who knows one start a task: task runners and up see them.
  const aliases = can(ctx.role, "task_runner")
    ? await Promise.all(rows.map((row) => api("GET", `${base}/${row.id}/aliases`))) : rows.map(() => null);
  // The project's own URLs serve its searchable integrations (their matchers decide).
  const shared = can(ctx.role, "task_runner") ? await api("GET", `${base}/aliases`) : null;
  const templateName = (id) => templates.find((t) => t.id === id)?.name ?? `#${id}`;
  const refresh = () => integrationsPage(ctx);

  // The URLs of an integration (`${base}/${id}/aliases`) or of the project (`${base}/aliases`).
  const urls = (list, path) => [list.map((alias) => h("div.alias", copyUrl(alias.url),
    manage ? h("button.small.danger", {type: "button", "aria-label": "Remove this URL",
      onclick: async () => {
        if (!(await confirmAction("Remove this webhook URL? Senders using it will get 404.", "Remove"))) return;
        await act(() => api("DELETE", `${path}/${alias.id}`));
      }}, "Remove") : null)),
  manage ? h("button.small", {type: "button", onclick: () => act(() => api("POST", path))},
    list.length ? "Add URL" : "Create URL") : null];
  const urlCell = (row, list) => (list === null ? h("td", "—")
    : h("td.urls", urls(list, `${base}/${row.id}/aliases`)));

  async function act(call) {
    try {
      await call();
    } catch (err) {
      flash(describe(err));
    }
    await refresh();
  }

  const table = h("table.integrations",
    h("thead", h("tr", ["Name", "Template", "Auth", "Webhook URL", "Actions"].map((t) =>
      h("th", {scope: "col"}, t)))),
    h("tbody", rows.length ? rows.map((row, i) => h("tr", {"data-id": row.id},
      h("th", {scope: "row"}, row.name), h("td", templateName(row.template_id)),
      h("td", authLabel(row.auth_method)), urlCell(row, aliases[i]),
      h("td.buttons",
        h("button", {type: "button", onclick: () => editIntegration(ctx, row, templates, refresh)},
          manage ? "Edit" : "View"),
        manage ? h("button.danger", {type: "button", onclick: async () => {
          if (!(await confirmAction(`Delete integration "${row.name}" and its webhook URLs?`))) return;
          await act(() => api("DELETE", `${base}/${row.id}`));
        }}, "Delete") : null)))
      : h("tr", h("td", {colspan: 5}, "None yet."))));
  clear(ctx.content, h("div.page-head", h("h2", "Integrations"),
    manage ? h("button.primary", {type: "button", onclick: () =>
      editIntegration(ctx, {}, templates, refresh)}, "New") : null),
  h("p.hint", "A webhook (from GitHub, GitLab, a script) posts to an integration's URL; when " +
    "its signature is right and its matchers match, the template runs with the values it " +
    "extracts as extra variables."),
  h("div.table-wrap", table),
  shared === null || !(shared.length || rows.some((row) => row.searchable)) ? null
    : h("section.shared-urls", h("h3", "Shared project URL"),
      h("p.hint", "Serves every integration marked as served by it, when all of its " +
        "(at least one) matchers match."), h("div.urls", urls(shared, `${base}/aliases`))));
}

async function editIntegration(ctx, row, templates, refresh) {
  const base = `${ctx.base}/integrations`;
  const manage = can(ctx.role, "manager");
  const keys = manage ? (await api("GET", `${ctx.base}/keys`)).filter((k) => k.type === "login_password") : [];
  const current = row.id ? await api("GET", `${base}/${row.id}`) : row;
  const fields = [
    field("Name", input("name", {value: current.name || ""})),
    field("Template", select("template_id", templates.map((t) => [t.id, t.name]), current.template_id)),
    field("Auth method", select("auth_method", AUTH, current.auth_method === "none" ? "" : current.auth_method || "")),
    field("Auth header", input("auth_header", {value: current.auth_header || "",
      placeholder: "X-Signature"}), "the request header with the signature or token"),
    field("Secret (login and password key)", select("auth_secret_id",
      [["", "— choose a key —"], ...keys.map((k) => [k.id, k.name])], current.auth_secret_id ?? ""),
    "its password is the webhook's secret"),
    check("searchable", "Served by the project's shared URL (matchers decide)", !!current.searchable),
  ];
  const f = form(fields, row.id ? "Save" : "Create", async (v) => {
    const body = {name: v.name, template_id: Number(v.template_id), auth_method: v.auth_method,
      auth_header: v.auth_header, searchable: v.searchable,
      auth_secret_id: v.auth_secret_id === "" ? null : Number(v.auth_secret_id),
      task_params: current.task_params || {}};
    if (row.id) {
      await api("PUT", `${base}/${row.id}`, body);
      d.close();
    } else {
      const created = await api("POST", `${base}`, body);
      // A new integration gets its webhook URL at once (the sender needs one).
      if (!created.searchable) await api("POST", `${base}/${created.id}/aliases`);
      d.close();
      await refresh();
      await editIntegration(ctx, created, templates, refresh);
      return;
    }
    await refresh();
  });
  const method = f.elements.auth_method;
  const show = () => {
    f.querySelector('.field[data-field="auth_header"]').hidden = !["hmac", "token"].includes(method.value);
    f.querySelector('.field[data-field="auth_secret_id"]').hidden = method.value === "";
  };
  method.addEventListener("change", show);
  show();
  if (!manage) for (const el of f.elements) el.disabled = true;
  const parts = [f];
  if (row.id) {
    parts.push(h("section.matchers", h("h3", "Matchers"),
      h("p.hint", "Every matcher must match for a task to start."), h("div.rows")));
    parts.push(h("section.values", h("h3", "Extract values"),
      h("p.hint", "Values of the payload the task gets: as extra variables (environment) " +
        "or task parameters (task)."), h("div.rows")));
  }
  const d = dialog(`${row.id ? (manage ? "Edit" : "View") : "New"} integration`, h("div", parts));
  d.querySelector("input").focus();
  if (row.id) {
    await childList(d.querySelector("section.matchers .rows"), `${base}/${row.id}/matchers`, MATCHER, manage);
    await childList(d.querySelector("section.values .rows"), `${base}/${row.id}/values`, VALUE, manage);
  }
}

const MATCHER = {
  noun: "matcher",
  describe: (m) => `${m.match_type === "header" ? "header" : `body (${m.body_data_type})`} ` +
    `${m.key} ${m.method} "${m.value}"`,
  fields: () => [
    field("Name", input("name")),
    field("Match", select("match_type", [["header", "Header"], ["body", "Body"]], "header")),
    field("Body as", select("body_data_type", [["json", "JSON"], ["string", "Text"]], "json")),
    field("Key", input("key", {placeholder: "X-GitHub-Event, or ref, repository.full_name"})),
    field("Method", select("method", [["equals", "equals"], ["unequals", "does not equal"],
      ["contains", "contains"]], "equals")),
    field("Value", input("value")),
  ],
  body: (v) => ({name: v.name, match_type: v.match_type, body_data_type: v.body_data_type,
    key: v.key, method: v.method, value: v.value}),
  source: "match_type",
};

const VALUE = {
  noun: "value",
  describe: (x) => `${x.value_source === "header" ? "header" : `body (${x.body_data_type})`} ` +
    `${x.key} → ${x.variable} (${x.variable_type})`,
  fields: () => [
    field("Name", input("name")),
    field("From", select("value_source", [["body", "Body"], ["header", "Header"]], "body")),
    field("Body as", select("body_data_type", [["json", "JSON"], ["string", "Whole text"]], "json")),
    field("Key", input("key", {placeholder: "ref, head_commit.id, or a header's name"})),
    field("Variable", input("variable", {placeholder: "branch"})),
    field("Into", select("variable_type", [["environment", "Extra variables"],
      ["task", "Task parameters"]], "environment")),
  ],
  body: (v) => ({name: v.name, value_source: v.value_source, body_data_type: v.body_data_type,
    key: v.key, variable: v.variable, variable_type: v.variable_type}),
  source: "value_source",
};

async function childList(box, path, spec, manage) {
  const rows = await api("GET", path);
  const reload = () => childList(box, path, spec, manage);
  const list = h("ul.child-rows", rows.length ? rows.map((row) => h("li", {"data-id": row.id},
    h("strong", row.name), " ", h("span", spec.describe(row)),
    manage ? h("button.small.danger", {type: "button", "aria-label": `Delete ${spec.noun} ${row.name}`,
      onclick: async () => {
        try {
          await api("DELETE", `${path}/${row.id}`);
        } catch (err) {
          flash(describe(err));
        }
        await reload();
      }}, "Delete") : null)) : h("li.none", "None."));
  if (!manage) return clear(box, list);
  const f = form(spec.fields(), `Add ${spec.noun}`, async (v) => {
    await api("POST", path, spec.body(v));
    await reload();
  });
  // "Body as" only means something for the body.
  const sourceSelect = f.elements[spec.source];
  const show = () => { f.querySelector('.field[data-field="body_data_type"]').hidden = sourceSelect.value !== "body"; };
  sourceSelect.addEventListener("change", show);
  show();
  clear(box, list, h("details", h("summary", `Add a ${spec.noun}`), f));
}
