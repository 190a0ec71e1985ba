// A template's ansible vaults (Semaphore's TemplateVault): rows of {vault id, type, key or
// script}, added and removed here, saved with the template as its `vaults` list. A vault names
// its key by id: no secret is ever in this form.
import {h} from "./h.js";

function keyOptions(keys, value) {
  return [h("option", {value: ""}, "— choose a key —"),
    keys.map((k) => h("option", {value: k.id, selected: String(k.id) === String(value)}, k.name))];
}

function vaultRow(vault, keys) {
  const type = h("select.vault-type", {"aria-label": "Vault type"},
    [["password", "password (key)"], ["script", "script"]].map(([v, label]) =>
      h("option", {value: v, selected: v === (vault.type || "password")}, label)));
  const key = h("select.vault-key", {"aria-label": "Vault password key"},
    keyOptions(keys, vault.vault_key_id));
  const script = h("input.vault-script", {type: "text", "aria-label": "Vault script",
    placeholder: "scripts/vault-pass.sh", value: vault.script || ""});
  const show = () => {
    key.hidden = type.value !== "password";
    script.hidden = type.value !== "script";
  };
  type.addEventListener("change", show);
  show();
  const row = h("tr.vault",
    h("td", h("input.vault-name", {type: "text", "aria-label": "Vault id",
      placeholder: "default", value: vault.name || ""})),
    h("td", type), h("td", key, script));
  row.append(h("td.buttons", h("button.small", {type: "button", onclick: () => row.remove(),
    "aria-label": "Remove vault"}, "Remove")));
  return row;
}

// A `.field` named "vaults", so an API error about `vaults[i]` lands here. Only keys holding
// a password (login_password) may be chosen.
export function vaultsField(vaults, keys) {
  const passwordKeys = keys.filter((k) => k.type === "login_password");
  const body = h("tbody", vaults.map((v) => vaultRow(v, passwordKeys)));
  const add = h("button.small", {type: "button", onclick: () => {
    const row = vaultRow({}, passwordKeys);
    body.append(row);
    row.querySelector("input").focus();
  }}, "Add vault");
  return h("div.field.vaults", {"data-field": "vaults"},
    h("label", "Vaults"),
    h("div.table-wrap", h("table.vaults",
      h("thead", h("tr", ["Vault id", "Type", "Key / script", ""].map(
        (t) => h("th", {scope: "col"}, t)))),
      body)),
    add,
    h("div.hint", "ansible only: vault passwords from a login/password key, or a script in the repository"),
    h("div.field-error", {role: "alert"}));
}

// The `vaults` list, in the order of the rows.
export function vaultList(f) {
  return Array.from(f.querySelectorAll("table.vaults tbody tr"), (row) => {
    const type = row.querySelector(".vault-type").value;
    const key = row.querySelector(".vault-key").value;
    return {name: row.querySelector(".vault-name").value.trim(), type,
      vault_key_id: type === "password" && key ? Number(key) : null,
      script: type === "script" ? row.querySelector(".vault-script").value.trim() : ""};
  });
}
