// An environment's secrets: names and types listed (values are write-only, never shown),
// add one, set a new value, delete one. The API takes them as operations (Semaphore's
// `secrets` list: create/update/delete), read back from the rows when the form is saved.
import {h} from "./h.js";

const TYPES = [["env", "environment variable"], ["var", "extra variable"]];

function typeSelect(value) {
  return h("select.secret-type", {"aria-label": "Secret type"},
    TYPES.map(([v, label]) => h("option", {value: v, selected: v === value}, label)));
}

function valueInput(label, placeholder) {
  // No name: the form's values() leaves it out; only secretOperations() reads it.
  return h("input.secret-value", {type: "password", autocomplete: "new-password",
    "aria-label": label, placeholder});
}

function existingRow(secret) {
  const row = h("tr", {"data-secret-id": secret.id},
    h("th", {scope: "row"}, secret.name), h("td", secret.type),
    h("td", valueInput(`New value of ${secret.name}`, "unchanged")));
  const toggle = h("button.danger.small", {type: "button", onclick: () => {
    const deleting = !row.hasAttribute("data-deleted");
    row.toggleAttribute("data-deleted", deleting);
    toggle.textContent = deleting ? "Undo" : "Delete";
    row.querySelector(".secret-value").disabled = deleting;
  }, "aria-label": `Delete secret ${secret.name}`}, "Delete");
  append(row, toggle);
  return row;
}

function newRow() {
  const row = h("tr.new-secret",
    h("td", h("input.secret-name", {type: "text", "aria-label": "Secret name",
      autocomplete: "off", spellcheck: "false"})),
    h("td", typeSelect("env")),
    h("td", valueInput("Secret value", "value")));
  append(row, h("button.small", {type: "button", onclick: () => row.remove(),
    "aria-label": "Remove new secret"}, "Remove"));
  return row;
}

function append(row, button) {
  row.append(h("td.buttons", button));
}

// A `.field` named "secrets", so an API error about `secrets[i]` lands here.
export function secretsField(secrets) {
  const body = h("tbody", secrets.map(existingRow));
  const add = h("button.small", {type: "button", onclick: () => {
    const row = newRow();
    body.append(row);
    row.querySelector("input").focus();
  }}, "Add secret");
  return h("div.field.secrets", {"data-field": "secrets"},
    h("label", "Secrets"),
    h("div.table-wrap", h("table.secrets",
      h("thead", h("tr", ["Name", "Type", "Value", ""].map((t) => h("th", {scope: "col"}, t)))),
      body)),
    add,
    h("div.hint", "write-only: values are never shown; leave a value empty to keep it"),
    h("div.field-error", {role: "alert"}));
}

// The operations the API applies, in the order of the rows.
export function secretOperations(f) {
  const ops = [];
  for (const row of f.querySelectorAll("table.secrets tbody tr")) {
    const value = row.querySelector(".secret-value").value;
    if (row.dataset.secretId) {
      const id = Number(row.dataset.secretId);
      if (row.hasAttribute("data-deleted")) ops.push({id, operation: "delete"});
      else if (value) ops.push({id, operation: "update", secret: value});
    } else {
      ops.push({operation: "create", name: row.querySelector(".secret-name").value.trim(),
        type: row.querySelector(".secret-type").value, secret: value});
    }
  }
  return ops;
}
