// ANSI SGR -> <span>s: colours (16, 256, truecolour), bold, dim, italic, underline.
// Every other escape sequence is stripped. Text is only ever inserted as text nodes.

const SGR = /\x1b\[([0-9;]*)m/g;
// CSI (cursor moves, erase), OSC (titles, links), other two-byte escapes, lone control chars.
const OTHER = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]/g;

export function newState() {
  return {fg: null, bg: null, bold: false, dim: false, italic: false, underline: false};
}

function colour256(n) {
  if (n < 16) return {cls: n};
  if (n < 232) {
    n -= 16;
    const c = (v) => (v ? v * 40 + 55 : 0);
    return {rgb: `rgb(${c(Math.floor(n / 36))},${c(Math.floor(n / 6) % 6)},${c(n % 6)})`};
  }
  const g = (n - 232) * 10 + 8;
  return {rgb: `rgb(${g},${g},${g})`};
}

function apply(state, params) {
  const codes = params === "" ? [0] : params.split(";").map((p) => parseInt(p || "0", 10));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(state, newState());
    else if (c === 1) state.bold = true;
    else if (c === 2) state.dim = true;
    else if (c === 3) state.italic = true;
    else if (c === 4) state.underline = true;
    else if (c === 22) { state.bold = false; state.dim = false; }
    else if (c === 23) state.italic = false;
    else if (c === 24) state.underline = false;
    else if (c >= 30 && c <= 37) state.fg = {cls: c - 30};
    else if (c >= 90 && c <= 97) state.fg = {cls: c - 90 + 8};
    else if (c === 39) state.fg = null;
    else if (c >= 40 && c <= 47) state.bg = {cls: c - 40};
    else if (c >= 100 && c <= 107) state.bg = {cls: c - 100 + 8};
    else if (c === 49) state.bg = null;
    else if (c === 38 || c === 48) {
      let colour = null;
      if (codes[i + 1] === 5) { colour = colour256(codes[i + 2] || 0); i += 2; }
      else if (codes[i + 1] === 2) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.min(255, v || 0));
        colour = {rgb: `rgb(${r},${g},${b})`};
        i += 4;
      }
      if (c === 38) state.fg = colour; else state.bg = colour;
    }
  }
}

function span(text, state) {
  const plain = !state.fg && !state.bg && !state.bold && !state.dim && !state.italic
    && !state.underline;
  if (plain) return document.createTextNode(text);
  const el = document.createElement("span");
  const classes = [];
  if (state.fg?.cls !== undefined) classes.push(`fg${state.fg.cls}`);
  if (state.bg?.cls !== undefined) classes.push(`bg${state.bg.cls}`);
  if (state.bold) classes.push("b");
  if (state.dim) classes.push("dim");
  if (state.italic) classes.push("i");
  if (state.underline) classes.push("u");
  if (classes.length) el.className = classes.join(" ");
  // CSSOM, not a style attribute: allowed under the page's CSP.
  if (state.fg?.rgb) el.style.color = state.fg.rgb;
  if (state.bg?.rgb) el.style.backgroundColor = state.bg.rgb;
  el.textContent = text;
  return el;
}

// One line of output -> DOM nodes; `state` carries colours across lines and is updated.
export function ansiLine(line, state) {
  // A carriage return inside a line (progress bars): what follows the last one is shown.
  const cr = line.lastIndexOf("\r", line.length - 2);
  if (cr >= 0) line = line.slice(cr + 1);
  const nodes = [];
  let last = 0;
  SGR.lastIndex = 0;
  for (let m; (m = SGR.exec(line)); ) {
    const text = line.slice(last, m.index).replace(OTHER, "");
    if (text) nodes.push(span(text, state));
    apply(state, m[1]);
    last = SGR.lastIndex;
  }
  const rest = line.slice(last).replace(OTHER, "");
  if (rest) nodes.push(span(rest, state));
  return nodes;
}

export function stripAnsi(text) {
  return text.replace(SGR, "").replace(OTHER, "");
}
