// Schedules (Semaphore's cron or run-once starts of a template): the project's Schedules tab
// and a template's own list. Cron fields are read in the hub's schedule timezone; every time
// the API gives is UTC and is shown in the browser's local time (UTC on hover).
import {api, clear, confirmAction, describe, dialog, field, flash, form, h, input, select,
  when} from "./h.js";
import {can} from "./project.js";

// One <time>: local for reading, the API's UTC stamp kept in `datetime` and the tooltip.
function stamp(value) {
  return value ? h("time", {datetime: value, title: value}, when(value)) : "—";
}

// A datetime-local value (local time) for an API stamp, and back.
function localInput(value) {
  if (!value) return "";
  const d = new Date(value);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function utcStamp(local) {
  if (!local) return null;
  const d = new Date(local);
  return isNaN(d) ? local : d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

// The cron field asks the hub (POST .../schedules/validate) as it is typed, so the error it
// would give on save shows at once, next to the field.
function watchCron(ctx, f) {
  const cron = f.elements.cron_format;
  const slot = f.querySelector('.field[data-field="cron_format"] .field-error');
  let timer = null;
  let asked = 0;
  const check = async () => {
    const mine = ++asked;
    const value = cron.value.trim();
    let message = "";
    if (value) {
      try {
        await api("POST", `${ctx.base}/schedules/validate`, {cron_format: value});
      } catch (err) {
        message = err.message;
      }
    }
    if (mine !== asked) return; // a later keystroke's answer wins
    slot.textContent = message;
    if (message) cron.setAttribute("aria-invalid", "true");
    else cron.removeAttribute("aria-invalid");
  };
  cron.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 250);
  });
}

function scheduleDialog(ctx, templates, row, done) {
  const once = row.type === "run_at";
  const fields = [
    field("Name", input("name", {value: row.name || ""})),
    field("Template", select("template_id", templates.map((t) => [t.id, t.name]),
      row.template_id ?? templates[0]?.id)),
    field("Type", select("type", [["", "Cron (repeating)"], ["run_at", "Once, at a time"]],
      row.type || "")),
    field("Cron", input("cron_format", {value: row.cron_format || "", placeholder: "0 3 * * *",
      spellcheck: "false", autocomplete: "off"}),
    "minute hour day-of-month month day-of-week, in the hub's schedule timezone"),
    field("Run at", input("run_at", {type: "datetime-local", value: localInput(row.run_at)}),
      "your local time"),
    h("div.field.check", {"data-field": "delete_after_run"},
      h("label", h("input", {type: "checkbox", name: "delete_after_run",
        checked: row.delete_after_run}), " Delete after it has run"), h("div.field-error")),
    h("div.field.check", {"data-field": "active"},
      h("label", h("input", {type: "checkbox", name: "active", checked: row.active ?? true}),
        " Active"), h("div.field-error")),
  ];
  const f = form(fields, row.id ? "Save" : "Create", async (v) => {
    const body = {name: v.name, template_id: Number(v.template_id), type: v.type,
      active: v.active, delete_after_run: v.delete_after_run};
    if (v.type === "run_at") body.run_at = utcStamp(v.run_at) || "";
    else body.cron_format = v.cron_format.trim();
    if (row.id) await api("PUT", `${ctx.base}/schedules/${row.id}`, body);
    else await api("POST", `${ctx.base}/schedules`, body);
    d.close();
    await done();
  });
  // Only the fields of the chosen type are shown.
  const type = f.elements.type;
  const show = () => {
    const run = type.value === "run_at";
    f.querySelector('.field[data-field="cron_format"]').hidden = run;
    f.querySelector('.field[data-field="run_at"]').hidden = !run;
    f.querySelector('.field[data-field="delete_after_run"]').hidden = !run;
  };
  type.addEventListener("change", show);
  show();
  watchCron(ctx, f);
  const d = dialog(`${row.id ? "Edit" : "New"} schedule${once ? " (run once)" : ""}`, f);
  f.elements.name.focus();
}

// The table of schedules (all of the project's, or one template's) with its "New" button.
// `fixed`: the template a new schedule is for (a template's page).
export async function scheduleList(ctx, box, fixed = null) {
  const manage = can(ctx.role, "manager");
  const [rows, templates] = await Promise.all([
    api("GET", fixed ? `${ctx.base}/templates/${fixed.id}/schedules` : `${ctx.base}/schedules`),
    api("GET", `${ctx.base}/templates`)]);
  const names = new Map(templates.map((t) => [t.id, t.name]));
  const again = () => scheduleList(ctx, box, fixed);
  const choices = fixed ? templates.filter((t) => t.id === fixed.id) : templates;
  const toggle = async (row, on) => {
    try {
      await api("PUT", `${ctx.base}/schedules/${row.id}/active`, {active: on});
    } catch (err) {
      flash(describe(err));
    }
    await again();
  };
  const remove = async (row) => {
    if (!(await confirmAction(`Delete schedule "${row.name}"?`))) return;
    try {
      await api("DELETE", `${ctx.base}/schedules/${row.id}`);
    } catch (err) {
      flash(describe(err));
    }
    await again();
  };
  const edit = (row) => scheduleDialog(ctx, choices, row, again);
  const table = h("table.schedules",
    h("thead", h("tr", ["Name", "Template", "When", "Active", "Next run", "Actions"].map(
      (t) => h("th", {scope: "col"}, t)))),
    h("tbody", rows.length ? rows.map((row) => h("tr", {"data-id": row.id},
      h("th", {scope: "row"}, row.name),
      h("td", h("a", {href: `#/project/${ctx.projectId}/templates/${row.template_id}`},
        names.get(row.template_id) ?? `#${row.template_id}`)),
      h("td", row.type === "run_at" ? ["once at ", stamp(row.run_at)] : h("code", row.cron_format)),
      h("td", h("input", {type: "checkbox", checked: row.active, disabled: !manage,
        "aria-label": `Active: ${row.name}`, onchange: (e) => toggle(row, e.target.checked)})),
      h("td.next-run", stamp(row.next_run), row.last_error ? h("div.error-text",
        {title: `due ${row.last_error.due}, failing since ${row.last_error.since}`},
        `could not start: ${row.last_error.error} (retrying)`) : null),
      h("td.buttons",
        manage ? h("button", {type: "button", onclick: () => edit(row)}, "Edit") : null,
        can(ctx.role, "owner")
          ? h("button.danger", {type: "button", onclick: () => remove(row)}, "Delete") : null)))
      : h("tr", h("td", {colspan: 6}, "No schedules yet."))));
  clear(box, h("div.page-head", h(fixed ? "h3" : "h2", "Schedules"),
    manage && choices.length ? h("button.primary", {type: "button",
      onclick: () => edit(fixed ? {template_id: fixed.id} : {})}, "New schedule") : null),
  h("div.table-wrap", table));
}

export async function schedulesPage(ctx) {
  await scheduleList(ctx, ctx.content);
}
