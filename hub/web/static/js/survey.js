// A template's survey (Semaphore's survey_vars): edited as rows in the template form, asked
// for in the run dialog. As Semaphore's run dialog sends them: the answers in the task's
// `environment` JSON, the secret ones in its `secret` JSON (never shown back).
import {h, field, input, textarea} from "./h.js";

const TYPES = [["", "string"], ["text", "text (lines)"], ["int", "integer"],
  ["enum", "choice (enum)"], ["secret", "secret"]];

// Enum choices as text, one a line: `value` or `Label = value`.
function choicesText(values) {
  return (values || []).map((c) => (c.name && c.name !== c.value ? `${c.name} = ${c.value}` : c.value))
    .join("\n");
}

function parseChoices(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
    const at = line.lastIndexOf("=");
    if (at < 0) return {name: line, value: line};
    return {name: line.slice(0, at).trim(), value: line.slice(at + 1).trim()};
  });
}

function surveyRow(v) {
  const type = h("select.survey-type", {"aria-label": "Variable type"},
    TYPES.map(([value, label]) => h("option", {value, selected: value === (v.type || "")}, label)));
  const choices = h("textarea.survey-values", {rows: 2, "aria-label": "Choices",
    placeholder: "one a line: value, or Label = value"}, choicesText(v.values));
  choices.value = choicesText(v.values);
  const show = () => { choices.hidden = type.value !== "enum"; };
  type.addEventListener("change", show);
  show();
  const row = h("tr.survey-var", {"data-default": v.default_value || ""},
    h("td", h("input.survey-name", {type: "text", "aria-label": "Variable name",
      placeholder: "replicas", value: v.name || ""})),
    h("td", h("input.survey-title", {type: "text", "aria-label": "Variable title",
      placeholder: "Replicas", value: v.title || ""})),
    h("td", type, choices),
    h("td", h("input.survey-required", {type: "checkbox", "aria-label": "Required",
      checked: !!v.required})),
    h("td", h("input.survey-description", {type: "text", "aria-label": "Variable description",
      value: v.description || ""})));
  row.append(h("td.buttons", h("button.small", {type: "button", onclick: () => row.remove(),
    "aria-label": "Remove variable"}, "Remove")));
  return row;
}

// A `.field` named "survey_vars", so an API error about `survey_vars[i]...` lands here.
export function surveyField(vars) {
  const body = h("tbody", vars.map(surveyRow));
  const add = h("button.small", {type: "button", onclick: () => {
    const row = surveyRow({});
    body.append(row);
    row.querySelector("input").focus();
  }}, "Add variable");
  return h("div.field.survey", {"data-field": "survey_vars"},
    h("label", "Survey"),
    h("div.table-wrap", h("table.survey",
      h("thead", h("tr", ["Name", "Title", "Type", "Required", "Description", ""].map(
        (t) => h("th", {scope: "col"}, t)))),
      body)),
    add,
    h("div.hint", "variables asked for at each run, passed to it as extra vars"),
    h("div.field-error", {role: "alert"}));
}

// The `survey_vars` list, in the order of the rows.
export function surveyList(f) {
  return Array.from(f.querySelectorAll("table.survey tbody tr"), (row) => {
    const type = row.querySelector(".survey-type").value;
    return {name: row.querySelector(".survey-name").value.trim(),
      title: row.querySelector(".survey-title").value.trim(),
      description: row.querySelector(".survey-description").value.trim(),
      type, required: row.querySelector(".survey-required").checked,
      values: type === "enum" ? parseChoices(row.querySelector(".survey-values").value) : [],
      default_value: row.dataset.default || ""};
  });
}

// The run dialog's fields, one per survey variable, each a `.field` named `survey.<name>`.
export function surveyInputs(template) {
  return (template.survey_vars || []).map((v) => {
    const name = `survey.${v.name}`;
    const label = (v.title || v.name) + (v.required ? " *" : "");
    let control;
    if (v.type === "enum") {
      control = h("select", {name},
        h("option", {value: ""}, "— choose —"),
        (v.values || []).map((c) => h("option", {value: c.value,
          selected: c.value === v.default_value}, c.name || c.value)));
    } else if (v.type === "int") {
      control = input(name, {type: "number", step: 1, value: v.default_value || ""});
    } else if (v.type === "text") {
      control = textarea(name, {rows: 3, value: v.default_value || ""});
    } else if (v.type === "secret") {
      control = input(name, {type: "password", autocomplete: "new-password"});
    } else {
      control = input(name, {value: v.default_value || ""});
    }
    return field(label, control, v.description || null);
  });
}

// The answers as Semaphore sends them: {environment, secret} JSON strings (empty: none).
export function surveyAnswers(template, v) {
  const plain = {};
  const secret = {};
  for (const s of template.survey_vars || []) {
    const value = v[`survey.${s.name}`];
    if (value === undefined || value === "") continue;
    if (s.type === "secret") secret[s.name] = value;
    else plain[s.name] = s.type === "int" && /^-?\d+$/.test(value) ? Number(value) : value;
  }
  return {environment: Object.keys(plain).length ? JSON.stringify(plain) : "",
    secret: Object.keys(secret).length ? JSON.stringify(secret) : ""};
}

// The run dialog field a survey error is about ("survey variable 'name'"), if any.
export function surveyErrorField(message) {
  const m = /survey variable ['"]([^'"]+)['"]/.exec(message || "");
  return m ? `survey.${m[1]}` : null;
}
