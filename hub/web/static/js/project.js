// Projects and their tabs: keys, repositories, inventories, environments, templates (runs);
// the task list and task page are in tasks.js, integrations (webhooks) in integrations.js.
import {ApiError, api, clear, confirmAction, describe, dialog, duration, field, flash, form, h,
  input, select, textarea, when} from "./h.js";
import {onLeave, session} from "./app.js";
import {integrationsPage} from "./integrations.js";
import {activityTab} from "./events.js";
import {runnersPage} from "./runners.js";
import {taskPage, tasksPage} from "./tasks.js";
import {secretOperations, secretsField} from "./secrets.js";
import {vaultList, vaultsField} from "./vaults.js";
import {scheduleList, schedulesPage} from "./schedules.js";
import {currentView, projectViews, viewTabs} from "./views.js";
import {surveyAnswers, surveyErrorField, surveyField, surveyInputs, surveyList} from "./survey.js";

const RANK = {guest: 0, task_runner: 1, manager: 2, owner: 3};

// The signed-in user's role in a project (admins act as owners).
export async function projectRole(projectId) {
  if (session.user.admin) return "owner";
  const members = await api("GET", `/api/project/${projectId}/users`);
  return members.find((m) => m.id === session.user.id)?.role || "guest";
}

export const can = (role, needed) => RANK[role] >= RANK[needed];

export async function projectsPage() {
  const page = document.getElementById("page");
  const projects = await api("GET", "/api/projects");
  const f = form([field("Name", input("name"))], "Create project", async (v) => {
    const p = await api("POST", "/api/projects", {name: v.name});
    location.hash = `#/project/${p.id}/templates`;
  });
  // Only those the hub lets create projects (admins, or all with non_admin_can_create_project).
  const creator = session.user && session.user.can_create_project;
  clear(page, h("h1", "Projects"),
    projects.length ? h("ul.cards", projects.map((p) =>
      h("li", h("a", {href: `#/project/${p.id}/templates`}, p.name)))) : h("p", "No projects yet."),
    creator ? h("section", h("h2", "New project"), f) : null,
    creator ? h("section", h("h2", "Restore project"), restoreForm()) : null);
}

function fileError(message) {
  const err = new ApiError(0, message);
  err.field = "backup"; // shown next to the file input
  return err;
}

// Semaphore's "Restore project": a backup file (Semaphore's JSON, from here or from
// Semaphore) becomes a new project, opened once it exists.
function restoreForm() {
  const file = input("backup", {type: "file", accept: ".json,application/json"});
  return form([field("Backup file", file,
    "A project backup in Semaphore's format; keys come back without their secrets.")],
  "Restore project", async () => {
    const chosen = file.files[0];
    if (!chosen) throw fileError("choose a backup file");
    let backup;
    try {
      backup = JSON.parse(await chosen.text());
    } catch (err) {
      throw fileError(`${chosen.name} is not JSON: ${err.message}`);
    }
    const p = await api("POST", "/api/projects/restore", backup);
    location.hash = `#/project/${p.id}/templates`;
  });
}

const TABS = [["templates", "Templates"], ["tasks", "Tasks"], ["schedules", "Schedules"],
  ["keys", "Keys"],
  ["repositories", "Repositories"], ["inventory", "Inventory"], ["environment", "Environment"],
  ["integrations", "Integrations"], ["runners", "Runners", "manager"], ["members", "Members"],
  ["activity", "Activity"]];

export async function projectPage(projectId, tab = "templates", id = null) {
  const page = document.getElementById("page");
  const [project, role] = await Promise.all([api("GET", `/api/project/${projectId}`),
    projectRole(projectId)]);
  const content = h("div.tab-content");
  const owner = can(role, "owner");
  const rename = () => {
    const f = form([field("Name", input("name", {value: project.name}))], "Save", async (v) => {
      await api("PUT", `/api/project/${projectId}`, {name: v.name});
      d.close();
      await projectPage(projectId, tab, id);
    });
    const d = dialog("Rename project", f);
    d.querySelector("input").focus();
  };
  const remove = async () => {
    if (!(await confirmAction(`Delete project "${project.name}" with all its templates and tasks?`))) return;
    try {
      await api("DELETE", `/api/project/${projectId}`);
      location.hash = "#/projects";
    } catch (err) {
      flash(describe(err));
    }
  };
  clear(page, h("div.page-head", h("h1", project.name), h("div.buttons",
    h("span.role", `your role: ${role}`),
    owner ? h("button", {type: "button", onclick: rename}, "Rename") : null,
    // Semaphore's backup (its format, no secrets): managers and owners may take one.
    can(role, "manager") ? h("a.button", {href: `/api/project/${projectId}/backup`,
      download: `project-${projectId}-backup.json`}, "Backup") : null,
    owner ? h("button.danger", {type: "button", onclick: remove}, "Delete project") : null)),
    h("nav.tabs", {"aria-label": "Project"}, h("ul", TABS.filter(([, , need]) => !need || can(role, need))
      .map(([key, label]) => h("li", h("a", {href: key === "members"
        ? `#/project/${projectId}/members` : `#/project/${projectId}/${key}`,
        "aria-current": key === tab ? "page" : null}, label))))),
    content);
  const ctx = {projectId, role, content, base: `/api/project/${projectId}`};
  if (tab === "members-shell") return content; // the members page fills it
  if (tab === "tasks" && id) return taskPage(ctx, id);
  if (tab === "tasks") return tasksPage(ctx);
  if (tab === "schedules") return schedulesPage(ctx);
  if (tab === "templates" && id) return templatePage(ctx, id);
  if (tab === "integrations") return integrationsPage(ctx);
  if (tab === "activity") return activityTab(ctx);
  if (tab === "runners") {
    await runnersPage(projectId, content);
    return;
  }
  if (RESOURCES[tab]) return resourcePage(ctx, tab);
  clear(content, h("p", "No such tab."));
}

// ---- Resources (keys, repositories, inventory, environment, templates) ----

function idSelect(name, rows, value, none = "— none —") {
  return select(name, [["", none], ...rows.map((r) => [r.id, r.name])], value ?? "");
}

function jsonArgs(text) {
  return text;
}

const num = (v) => (v === "" || v === undefined ? null : Number(v));

const RESOURCES = {
  keys: {
    title: "Keys", columns: [["name", "Name"], ["type", "Type"]],
    needs: [],
    fields(row) {
      const editing = !!row.id;
      const hint = editing ? "write-only: leave empty to keep the stored secret" : null;
      return [
        field("Name", input("name", {value: row.name || ""})),
        field("Type", select("type", [["none", "None"], ["ssh", "SSH key"],
          ["login_password", "Login and password"]], row.type || "none")),
        field("Login", input("login", {autocomplete: "off"})),
        field("Password", input("password", {type: "password", autocomplete: "new-password"}), hint),
        field("Private key", textarea("private_key", {autocomplete: "off", spellcheck: "false"}), hint),
        field("Passphrase", input("passphrase", {type: "password", autocomplete: "new-password"}), hint),
      ];
    },
    // Only the fields of the chosen type are shown.
    setup(f) {
      const type = f.elements.type;
      const show = () => {
        const wanted = {none: [], ssh: ["login", "private_key", "passphrase"],
          login_password: ["login", "password"]}[type.value] || [];
        for (const name of ["login", "password", "private_key", "passphrase"]) {
          f.querySelector(`.field[data-field="${name}"]`).hidden = !wanted.includes(name);
        }
      };
      type.addEventListener("change", show);
      show();
    },
    body(v, row) {
      const secret = v.login || v.password || v.private_key || v.passphrase;
      const body = {name: v.name, type: v.type, override_secret: !row.id || !!secret};
      if (v.type === "login_password") body.login_password = {login: v.login, password: v.password};
      if (v.type === "ssh") body.ssh = {login: v.login, private_key: v.private_key,
        passphrase: v.passphrase};
      return body;
    },
  },
  repositories: {
    title: "Repositories", columns: [["name", "Name"], ["git_url", "URL"], ["git_branch", "Branch"]],
    needs: ["keys"],
    fields(row, deps) {
      return [field("Name", input("name", {value: row.name || ""})),
        field("Git URL", input("git_url", {value: row.git_url || ""})),
        field("Branch", input("git_branch", {value: row.git_branch || ""})),
        field("Access key", idSelect("ssh_key_id", deps.keys, row.ssh_key_id))];
    },
    body: (v) => ({name: v.name, git_url: v.git_url, git_branch: v.git_branch,
      ssh_key_id: num(v.ssh_key_id)}),
  },
  inventory: {
    title: "Inventory", columns: [["name", "Name"], ["type", "Type"]],
    needs: ["keys", "repositories"],
    fields(row, deps) {
      return [field("Name", input("name", {value: row.name || ""})),
        field("Type", select("type", [["static", "Static (INI)"], ["static-yaml", "Static (YAML)"],
          ["file", "File in the repository"], ["terraform-workspace", "Terraform workspace"]],
        row.type || "static")),
        field("Inventory", textarea("inventory", {value: row.inventory || "", rows: 6})),
        field("SSH key", idSelect("ssh_key_id", deps.keys, row.ssh_key_id)),
        field("Become key", idSelect("become_key_id", deps.keys, row.become_key_id)),
        field("Repository", idSelect("repository_id", deps.repositories, row.repository_id))];
    },
    body: (v) => ({name: v.name, type: v.type, inventory: v.inventory,
      ssh_key_id: num(v.ssh_key_id), become_key_id: num(v.become_key_id),
      repository_id: num(v.repository_id)}),
  },
  environment: {
    title: "Environment", columns: [["name", "Name"]],
    needs: [],
    fields(row) {
      return [field("Name", input("name", {value: row.name || ""})),
        field("Extra variables (JSON)", textarea("json", {value: row.json || "{}"})),
        field("Environment variables (JSON)", textarea("env", {value: row.env || "{}"})),
        field("Vault password", input("password", {type: "password", autocomplete: "new-password"}),
          "write-only: never shown again"),
        secretsField(row.secrets || [])];
    },
    body: (v, row, f) => ({name: v.name, json: v.json, env: v.env, password: v.password,
      secrets: secretOperations(f)}),
  },
  templates: {
    title: "Templates", columns: [["name", "Name"], ["app", "App"], ["playbook", "Playbook / script"]],
    needs: ["repositories", "inventory", "environment", "keys", "views"],
    fields(row, deps) {
      const views = deps.views.map((v) => ({id: v.id, name: v.title}));
      return [field("Name", input("name", {value: row.name || ""})),
        field("App", select("app", ["ansible", "terraform", "tofu", "bash", "python", "powershell",
          "pulumi"].map((a) => [a, a]), row.app || "ansible")),
        field("Playbook / script", input("playbook", {value: row.playbook || ""})),
        field("Arguments (JSON list)", input("arguments", {value: row.arguments || "[]"})),
        field("Description", textarea("description", {value: row.description || "", rows: 2})),
        field("Repository", idSelect("repository_id", deps.repositories, row.repository_id)),
        field("Inventory", idSelect("inventory_id", deps.inventory, row.inventory_id)),
        field("Environment", idSelect("environment_id", deps.environment, row.environment_id)),
        field("Branch", input("git_branch", {value: row.git_branch || ""})),
        field("View", idSelect("view_id", views, row.id ? row.view_id : currentView(), "— no view —")),
        field("Runner tag", input("runner_tag", {value: row.runner_tag || ""})),
        field("Timeout (seconds, 0: none)", input("timeout_sec", {type: "number", min: 0,
          value: row.timeout_sec || 0})),
        h("div.field.check", {"data-field": "allow_override_args_in_task"},
          h("label", h("input", {type: "checkbox", name: "allow_override_args_in_task",
            checked: row.allow_override_args_in_task}), " Arguments may be overridden per task"),
          h("div.field-error")),
        h("div.field.check", {"data-field": "allow_override_branch_in_task"},
          h("label", h("input", {type: "checkbox", name: "allow_override_branch_in_task",
            checked: row.allow_override_branch_in_task}), " Branch may be chosen per task"),
          h("div.field-error")),
        vaultsField(row.vaults || [], deps.keys),
        surveyField(row.survey_vars || [])];
    },
    // Vaults are ansible's: shown for it only.
    setup(f) {
      const app = f.elements.app;
      const box = f.querySelector('.field[data-field="vaults"]');
      const show = () => { box.hidden = app.value !== "ansible"; };
      app.addEventListener("change", show);
      show();
    },
    body: (v, row, f) => ({name: v.name, app: v.app, playbook: v.playbook, arguments: jsonArgs(v.arguments),
      description: v.description, repository_id: num(v.repository_id),
      inventory_id: num(v.inventory_id), environment_id: num(v.environment_id),
      git_branch: v.git_branch, runner_tag: v.runner_tag, timeout_sec: Number(v.timeout_sec || 0),
      allow_override_args_in_task: v.allow_override_args_in_task,
      allow_override_branch_in_task: v.allow_override_branch_in_task,
      vaults: v.app === "ansible" ? vaultList(f) : [],
      survey_vars: surveyList(f),
      view_id: num(v.view_id),
      // What this form does not show is set through the API; an edit here keeps it.
      type: (row && row.type) || "", task_params: (row && row.task_params) || {},
      allow_parallel_tasks: !!(row && row.allow_parallel_tasks),
      suppress_success_alerts: !!(row && row.suppress_success_alerts),
      autorun: !!(row && row.autorun), start_version: (row && row.start_version) ?? null,
      build_template_id: (row && row.build_template_id) || null}),
  },
};

async function resourcePage(ctx, kind) {
  const spec = RESOURCES[kind];
  const manage = can(ctx.role, "manager");
  let rows = await api("GET", `${ctx.base}/${kind}`);
  // Templates: the project's views as sub-tabs; one chosen shows only its templates.
  let tabs = null;
  if (kind === "templates") {
    const views = await projectViews(ctx);
    const current = views.some((v) => v.id === currentView()) ? currentView() : null;
    if (current) rows = rows.filter((row) => row.view_id === current);
    tabs = viewTabs(ctx, views, current, () => resourcePage(ctx, kind));
  }
  const name = (row, k) => (kind === "templates"
    ? h("a", {href: `#/project/${ctx.projectId}/templates/${row.id}`}, row[k]) : row[k]);
  const table = h("table",
    h("thead", h("tr", spec.columns.map(([, t]) => h("th", {scope: "col"}, t)),
      h("th", {scope: "col"}, "Actions"))),
    h("tbody", rows.length ? rows.map((row) => h("tr", {"data-id": row.id},
      spec.columns.map(([k], i) => (i === 0 ? h("th", {scope: "row"}, name(row, k))
        : h("td", row[k] ?? ""))),
      h("td.buttons",
        kind === "templates" && can(ctx.role, "task_runner")
          ? h("button.primary", {type: "button", onclick: () => runDialog(ctx, row)}, "Run") : null,
        kind === "templates" ? h("a.button", {href: `#/project/${ctx.projectId}/tasks?template=${row.id}`},
          "Tasks") : null,
        manage ? h("button", {type: "button", onclick: () => edit(row)}, "Edit") : null,
        manage ? h("button.danger", {type: "button", onclick: () => remove(row)}, "Delete") : null)))
      : h("tr", h("td", {colspan: spec.columns.length + 1}, "None yet."))));
  clear(ctx.content, h("div.page-head", h("h2", spec.title),
    manage ? h("button.primary", {type: "button", onclick: () => edit({})}, `New`) : null),
  tabs, h("div.table-wrap", table));

  async function edit(row) {
    const deps = {};
    for (const dep of spec.needs) deps[dep] = await api("GET", `${ctx.base}/${dep}`);
    let current = row;
    if (row.id) {
      try {
        current = await api("GET", `${ctx.base}/${kind}/${row.id}`);
      } catch (err) {
        flash(describe(err));
        return;
      }
    }
    const f = form(spec.fields(current, deps), row.id ? "Save" : "Create", async (v) => {
      const body = spec.body(v, current, f);
      if (row.id) await api("PUT", `${ctx.base}/${kind}/${row.id}`, body);
      else await api("POST", `${ctx.base}/${kind}`, body);
      d.close();
      await resourcePage(ctx, kind);
    });
    if (spec.setup) spec.setup(f);
    const d = dialog(`${row.id ? "Edit" : "New"} ${spec.title.toLowerCase()}`, f);
    d.querySelector("input, select, textarea").focus();
  }

  async function remove(row) {
    if (!(await confirmAction(`Delete "${row.name}"?`))) return;
    try {
      await api("DELETE", `${ctx.base}/${kind}/${row.id}`);
    } catch (err) {
      flash(describe(err));
    }
    await resourcePage(ctx, kind);
  }
}

// ---- A template's page: what it runs, and its schedules ----

async function templatePage(ctx, templateId) {
  const template = await api("GET", `${ctx.base}/templates/${templateId}`);
  const schedules = h("section.template-schedules");
  const facts = [["App", template.app], ["Playbook / script", template.playbook],
    ["Branch", template.git_branch], ["Runner tag", template.runner_tag],
    ["Description", template.description]].filter(([, v]) => v);
  clear(ctx.content, h("div.page-head", h("h2", template.name), h("div.buttons",
    can(ctx.role, "task_runner")
      ? h("button.primary", {type: "button", onclick: () => runDialog(ctx, template)}, "Run") : null,
    h("a.button", {href: `#/project/${ctx.projectId}/tasks?template=${template.id}`}, "Tasks"),
    h("a.button", {href: `#/project/${ctx.projectId}/templates`}, "All templates"))),
  h("dl.facts", facts.map(([k, v]) => [h("dt", k), h("dd", v)])), schedules);
  await scheduleList(ctx, schedules, template);
}

// ---- Run a template ----

function runDialog(ctx, template) {
  const fields = [field("Message", input("message")), ...surveyInputs(template)];
  if (template.allow_override_branch_in_task) {
    fields.push(field("Branch", input("git_branch", {value: template.git_branch || ""})));
    fields.push(field("Commit", input("commit_hash", {placeholder: "latest of the branch"}),
      "a commit hash, or empty"));
  }
  if (template.allow_override_args_in_task) {
    fields.push(field("Arguments (JSON list)", input("arguments", {value: template.arguments || "[]"})));
  }
  if (template.app === "ansible") {
    fields.push(field("Limit", input("limit"), "hosts or groups (ansible --limit)"));
    // The template's task_params say whether a task may choose its own tags.
    const params = template.task_params || {};
    for (const [name, label, flag] of [["tags", "Tags", "allow_override_tags"],
      ["skip_tags", "Skip tags", "allow_override_skip_tags"]]) {
      if (params[flag]) {
        fields.push(field(label, input(name, {value: (params[name] || []).join(", ")}),
          "comma-separated; empty: none"));
      }
    }
    for (const [name, label] of [["debug", "Debug"], ["dry_run", "Dry run (--check)"], ["diff", "Diff"]]) {
      fields.push(h("div.field.check", {"data-field": name},
        h("label", h("input", {type: "checkbox", name}), " ", label), h("div.field-error")));
    }
  }
  const f = form(fields, "Run", async (v) => {
    const body = {template_id: template.id, message: v.message};
    if ("git_branch" in v) body.git_branch = v.git_branch;
    if (v.commit_hash) body.commit_hash = v.commit_hash;
    if (v.limit) body.limit = v.limit;
    if ("arguments" in v) body.arguments = v.arguments;
    for (const k of ["debug", "dry_run", "diff"]) if (k in v) body[k] = v[k];
    for (const k of ["tags", "skip_tags"]) {
      if (k in v) {
        body.params = body.params || {};
        body.params[k] = v[k].split(",").map((t) => t.trim()).filter(Boolean);
      }
    }
    const answers = surveyAnswers(template, v);
    if (answers.environment) body.environment = answers.environment;
    if (answers.secret) body.secret = answers.secret;
    let task;
    try {
      task = await api("POST", `${ctx.base}/tasks`, body);
    } catch (err) {
      // A survey answer the hub refused: shown at its own input.
      const at = surveyErrorField(err.message);
      if (at) err.field = at;
      throw err;
    }
    d.close();
    location.hash = `#/project/${ctx.projectId}/tasks/${task.id}`;
  });
  const d = dialog(`Run ${template.name}`, f);
  d.querySelector("input").focus();
}

// ---- Task list ----
