// DOM and API helpers. Everything from the API is inserted as text nodes (never innerHTML):
// names, output and errors are untrusted.

const SVG_NS = "http://www.w3.org/2000/svg";

// h("tag.class", {attr: v, onclick: fn}, child, [children], "text")
export function h(spec, attrs, ...children) {
  const [head, ...classes] = spec.split(".");
  const [tag, id] = head.split("#");
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  if (id) el.id = id;
  if (classes.length) el.setAttribute("class", classes.join(" "));
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "value" && !svg) el.value = value;
    else if (key === "checked") el.checked = !!value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
    this.field = fieldOf(message);
  }
}

// The API names the field as "field `name`" (or "field `name[2].part`": in an item of a
// list, shown at the list's field) or msgspec's "at `$.name`"/"field `name`".
export function fieldOf(message) {
  const m = /`\$\.([A-Za-z_]+)/.exec(message) || /field `([A-Za-z_]+)[`.[]/.exec(message);
  return m ? m[1] : null;
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(method, path, body) {
  const init = {method, credentials: "same-origin", headers: {Accept: "application/json"}};
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "the hub cannot be reached: " + err.message);
  }
  const text = await response.text();
  let data = null;
  if (text && (response.headers.get("Content-Type") || "").includes("json")) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    if (response.status === 401 && path !== "/api/auth/login") onUnauthorized();
    throw new ApiError(response.status, message);
  }
  return data ?? text;
}

// A message for a failed action on an object: a stale page gets told plainly.
export function describe(err) {
  if (err.status === 404) return "It no longer exists (deleted meanwhile?): " + err.message;
  if (err.status === 403) return "You are not allowed to do that: " + err.message;
  return err.message || String(err);
}

let fieldSeq = 0;
// A labelled form field with its own error slot (aria-describedby).
export function field(label, input, hint) {
  const id = input.id || `f${++fieldSeq}`;
  input.id = id;
  const error = h("div.field-error", {id: id + "-err", role: "alert"});
  input.setAttribute("aria-describedby", id + "-err");
  const box = h("div.field", {"data-field": input.name || ""},
    h("label", {for: id}, label), input, hint ? h("div.hint", hint) : null, error);
  return box;
}

export function input(name, attrs = {}) {
  return h("input", {name, type: "text", ...attrs});
}

export function textarea(name, attrs = {}) {
  return h("textarea", {name, rows: 4, ...attrs});
}

export function select(name, options, value) {
  return h("select", {name},
    options.map(([v, label]) => h("option", {value: v, selected: String(v) === String(value)}, label)));
}

// Show an API error next to the field it names (else at the top of the form).
export function showFormError(form, err) {
  for (const slot of form.querySelectorAll(".field-error, .form-error")) slot.textContent = "";
  for (const bad of form.querySelectorAll("[aria-invalid]")) bad.removeAttribute("aria-invalid");
  const name = err.field;
  const box = name && form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
  if (box) {
    box.querySelector(".field-error").textContent = err.message;
    const control = box.querySelector("input:not([disabled]), select, textarea");
    if (control) {
      control.setAttribute("aria-invalid", "true");
      control.focus();
    }
  } else {
    let slot = form.querySelector(".form-error");
    if (!slot) {
      slot = h("div.form-error", {role: "alert"});
      form.prepend(slot);
    }
    slot.textContent = describe(err);
  }
}

// A form whose submit calls `action(values)`; errors land next to their field.
export function form(fields, submitLabel, action, extra = []) {
  const button = h("button.primary", {type: "submit"}, submitLabel);
  const f = h("form", {novalidate: true}, fields, h("div.actions", button, extra));
  f.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      await action(values(f), f);
    } catch (err) {
      if (!(err instanceof ApiError)) console.error(err);
      showFormError(f, err instanceof ApiError ? err : new ApiError(0, String(err)));
    } finally {
      button.disabled = false;
    }
  });
  return f;
}

export function values(f) {
  const out = {};
  for (const el of f.elements) {
    if (!el.name) continue;
    out[el.name] = el.type === "checkbox" ? el.checked : el.value;
  }
  return out;
}

// A modal dialog (native <dialog>: focus trapped, Escape closes).
export function dialog(title, body) {
  const close = h("button.link", {type: "button", "aria-label": "Close"}, "×");
  const titleId = `dlg${++fieldSeq}`;
  const d = h("dialog", {"aria-labelledby": titleId},
    h("div.dialog-head", h("h2", {id: titleId}, title), close), body);
  close.addEventListener("click", () => d.close());
  d.addEventListener("close", () => d.remove());
  document.body.append(d);
  d.showModal();
  return d;
}

// Ask before a destructive action; resolves true when confirmed.
export function confirmAction(question, confirmLabel = "Delete") {
  return new Promise((resolve) => {
    let answer = false;
    const yes = h("button.danger", {type: "button"}, confirmLabel);
    const no = h("button", {type: "button"}, "Cancel");
    const d = dialog("Please confirm", h("div", h("p", question), h("div.actions", yes, no)));
    yes.addEventListener("click", () => { answer = true; d.close(); });
    no.addEventListener("click", () => d.close());
    d.addEventListener("close", () => resolve(answer));
    no.focus();
  });
}

export function flash(message, kind = "error") {
  const box = document.getElementById("flash");
  if (!box) return alert(message);
  clear(box, h(`div.flash.${kind}`, {role: "alert"}, message));
}

export function when(value) {
  if (!value) return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (isNaN(date) || date.getFullYear() < 2000) return "";
  return date.toLocaleString();
}

export function duration(start, end) {
  const a = Date.parse(start);
  if (!start || isNaN(a) || new Date(a).getFullYear() < 2000) return "";
  const b = end && !isNaN(Date.parse(end)) && new Date(end).getFullYear() >= 2000
    ? Date.parse(end) : Date.now();
  let s = Math.max(0, Math.round((b - a) / 1000));
  const m = Math.floor(s / 60);
  s %= 60;
  return m ? `${m}m ${s}s` : `${s}s`;
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
