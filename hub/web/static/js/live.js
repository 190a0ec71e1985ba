// The browser websocket /api/ws: one per page, reconnecting with backoff; a banner says
// when it is down. Output subscriptions are resent after a reconnect with the last seq seen,
// so no line is lost or shown twice.

const listeners = new Set();
const reconnectHooks = new Set();
const subscriptions = new Map(); // task_id -> () => after_seq
let socket = null;
let up = false;
let wasUp = false;
let delay = 500;
let timer = null;
let stopped = false;

function banner(text) {
  const el = document.getElementById("banner");
  if (!el) return;
  el.textContent = text || "";
  el.hidden = !text;
}

function send(message) {
  if (up && socket) socket.send(JSON.stringify(message));
}

export function isUp() { return up; }

export function start() {
  stopped = false;
  if (socket) return;
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let ws;
  try {
    ws = new WebSocket(scheme + location.host + "/api/ws");
  } catch {
    schedule();
    return;
  }
  socket = ws;
  ws.addEventListener("message", (event) => {
    let message;
    try { message = JSON.parse(event.data); } catch { return; }
    if (message.type === "hello") {
      up = true;
      delay = 500;
      banner("");
      for (const [taskId, afterSeq] of subscriptions) {
        send({subscribe_output: taskId, after_seq: afterSeq()});
      }
      if (wasUp) for (const hook of reconnectHooks) hook();
      wasUp = true;
    }
    for (const fn of listeners) fn(message);
  });
  ws.addEventListener("close", () => {
    socket = null;
    up = false;
    if (stopped) return;
    if (wasUp) banner("Connection lost, reconnecting…");
    schedule();
  });
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(start, delay);
  delay = Math.min(delay * 2, 5000);
}

export function stop() {
  stopped = true;
  clearTimeout(timer);
  if (socket) socket.close();
  socket = null;
  up = false;
  wasUp = false;
  banner("");
}

// Every message; returns the function that removes the listener.
export function on(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// Called after a reconnect, to catch up on what changed while down.
export function onReconnect(fn) {
  reconnectHooks.add(fn);
  return () => reconnectHooks.delete(fn);
}

export function subscribeOutput(taskId, afterSeq) {
  subscriptions.set(taskId, afterSeq);
  send({subscribe_output: taskId, after_seq: afterSeq()});
  return () => {
    subscriptions.delete(taskId);
    send({unsubscribe_output: taskId});
  };
}
