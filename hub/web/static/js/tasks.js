// A project's task list (filters, live) and a task's page (live output, stop, confirm).
import {api, clear, confirmAction, describe, duration, flash, h, select, when} from "./h.js";
import * as live from "./live.js";
import {onLeave, session} from "./app.js";
import {ansiLine, newState} from "./ansi.js";
import {can} from "./project.js";

const FINAL = new Set(["success", "error", "stopped", "rejected"]);
const STATUSES = ["waiting", "starting", "running", "waiting_confirmation", "confirmed",
  "success", "error", "stopped", "rejected"];

// Runner and member names for the task pages, where the user may read them (ids otherwise).
async function names(ctx) {
  const runners = new Map();
  const users = new Map();
  const path = session.user.admin ? "/api/runners"
    : can(ctx.role, "manager") ? `${ctx.base}/runners` : null;
  await Promise.all([
    path && api("GET", path).then((rows) => rows.forEach((r) => runners.set(r.id, r.name)))
      .catch(() => {}),
    api("GET", `${ctx.base}/users`).then((rows) => rows.forEach(
      (m) => users.set(m.id, m.name || m.username))).catch(() => {}),
  ]);
  return {
    runner: (id) => (id ? runners.get(id) || `runner ${id}` : ""),
    user: (id) => (id ? users.get(id) || `user ${id}` : ""),
    // False only for a runner this user could name but that is new since the last look.
    known: (id) => !path || !id || runners.has(id),
  };
}

function statusBadge(status) {
  return h(`span.status.${status}`, status.replace("_", " "));
}

export async function tasksPage(ctx) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const templates = await api("GET", `${ctx.base}/templates`);
  const templateNames = new Map(templates.map((t) => [t.id, t.name]));
  let who = await names(ctx);
  const statusFilter = select("status", [["", "all"], ...STATUSES.map((s) => [s, s])],
    params.get("status") || "");
  const templateFilter = select("template", [["", "all"], ...templates.map((t) => [t.id, t.name])],
    params.get("template") || "");
  statusFilter.id = "filter-status";
  templateFilter.id = "filter-template";
  const body = h("tbody");
  let tasks = [];
  clear(ctx.content, h("div.page-head", h("h2", "Tasks"), h("span.small", "the last 200")),
    h("div.filters", h("label", {for: "filter-status"}, "Status"), statusFilter,
      h("label", {for: "filter-template"}, "Template"), templateFilter),
    h("div.table-wrap", h("table.tasks", h("thead", h("tr", ["#", "Template", "Status", "Runner",
      "Started by", "Start", "Duration", "Commit"].map((t) => h("th", {scope: "col"}, t)))), body)));

  function render() {
    const s = statusFilter.value;
    const t = templateFilter.value;
    const shown = tasks.filter((x) => (!s || x.status === s) && (!t || String(x.template_id) === t));
    clear(body, shown.length ? shown.map((x) => h("tr", {"data-task": x.id},
      h("th", {scope: "row"}, h("a", {href: `#/project/${ctx.projectId}/tasks/${x.id}`}, `#${x.id}`)),
      h("td", templateNames.get(x.template_id) || `template ${x.template_id}`),
      h("td", statusBadge(x.status), x.waiting_reason ? h("div.small", x.waiting_reason) : null),
      h("td", who.runner(x.runner_id)),
      h("td", who.user(x.user_id)),
      h("td", when(x.start)),
      h("td", duration(x.start, FINAL.has(x.status) ? x.end : null)),
      h("td", h("code", (x.commit_hash || "").slice(0, 8)), x.commit_message
        ? h("span.small", " " + x.commit_message) : null)))
      : h("tr", h("td", {colspan: 8}, "No tasks.")));
  }
  async function load() {
    // The most recent 200, as Semaphore's own list: a big project stays fast.
    tasks = await api("GET", `${ctx.base}/tasks/last`);
    tasks.sort((a, b) => b.id - a.id);
    if (tasks.some((x) => !who.known(x.runner_id))) {
      who = await names(ctx); // a runner new since the last look
    }
    render();
  }
  for (const el of [statusFilter, templateFilter]) el.addEventListener("change", render);
  let pending = null;
  onLeave(live.on((m) => {
    if (m.type === "task" && m.project_id === ctx.projectId && !pending) {
      pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 200);
    }
  }));
  onLeave(live.onReconnect(() => load().catch(() => {})));
  const timer = setInterval(() => { if (!live.isUp()) load().catch(() => {}); }, 3000);
  onLeave(() => { clearInterval(timer); clearTimeout(pending); });
  await load();
}

// ---- Task page: live output ----

// Frames joined by seq, split into lines here; the incomplete last line is redrawn as it grows.
export class OutputView {
  constructor(el) {
    this.el = el;
    this.lastSeq = 0;
    this.partial = "";
    this.partialEl = null;
    this.state = newState();
    this.partialState = newState();
  }

  frame(seq, data) {
    if (seq <= this.lastSeq) return; // already shown (a resend after a reconnect)
    this.lastSeq = seq;
    this.text(data);
  }

  text(data) {
    const stick = this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - 20;
    const pieces = (this.partial + data).split("\n");
    if (this.partialEl) {
      this.partialEl.remove();
      this.partialEl = null;
    }
    this.state = {...this.partialState};
    for (const piece of pieces.slice(0, -1)) this.line(piece);
    this.partial = pieces[pieces.length - 1];
    this.partialState = {...this.state};
    if (this.partial) this.partialEl = this.line(this.partial, {...this.state});
    if (stick) this.el.scrollTop = this.el.scrollHeight;
  }

  line(text, state = this.state) {
    const el = h("div.line", ansiLine(text, state));
    this.el.append(el);
    return el;
  }

  reset() {
    this.el.replaceChildren();
    this.lastSeq = 0;
    this.partial = "";
    this.partialEl = null;
    this.state = newState();
    this.partialState = newState();
  }
}

export async function taskPage(ctx, taskId) {
  let task = await api("GET", `${ctx.base}/tasks/${taskId}`);
  const template = await api("GET", `${ctx.base}/templates/${task.template_id}`).catch(() => null);
  let who = await names(ctx);
  const head = h("div.task-head");
  const pre = h("div.output", {role: "log", "aria-label": "Task output", tabindex: 0});
  const view = new OutputView(pre);
  let viaSocket = false;
  clear(ctx.content, head, pre);

  function renderHead() {
    const running = !FINAL.has(task.status);
    const buttons = [];
    if (running && can(ctx.role, "task_runner")) {
      buttons.push(h("button.danger", {type: "button", onclick: () => act("stop")}, "Stop"));
    }
    if (task.status === "waiting_confirmation" && can(ctx.role, "task_runner")) {
      buttons.push(h("button.primary", {type: "button", onclick: () => act("confirm")}, "Confirm"),
        h("button.danger", {type: "button", onclick: () => act("reject")}, "Reject"));
    }
    clear(head,
      h("h2", `Task #${task.id}`, template ? ` · ${template.name}` : ""),
      h("p", statusBadge(task.status), task.runner_id ? ` on ${who.runner(task.runner_id)}` : "",
        task.user_id ? ` · by ${who.user(task.user_id)}` : "",
        task.start ? ` · started ${when(task.start)}` : "",
        task.start ? ` · ${duration(task.start, FINAL.has(task.status) ? task.end : null)}` : "",
        task.commit_hash ? h("span", " · commit ", h("code", task.commit_hash.slice(0, 8))) : ""),
      task.status === "waiting" && task.waiting_reason
        ? h("p.waiting-reason", {role: "status"}, "Waiting: ", task.waiting_reason) : null,
      task.status_message ? h("p.small", task.status_message) : null,
      task.message ? h("p.small", "Message: ", task.message) : null,
      h("div.buttons", buttons));
  }

  async function act(what) {
    if (what === "stop" && !(await confirmAction(`Stop task #${task.id}?`, "Stop"))) return;
    try {
      await api("POST", `${ctx.base}/tasks/${taskId}/${what}`, what === "stop" ? {} : undefined);
      await refresh();
    } catch (err) {
      flash(describe(err));
    }
  }

  async function refresh() {
    task = await api("GET", `${ctx.base}/tasks/${taskId}`);
    if (!who.known(task.runner_id)) {
      who = await names(ctx);
    }
    renderHead();
  }

  // Without the websocket the stored output is fetched whole and redrawn (no seq to go on).
  async function poll() {
    if (viaSocket) return;
    const lines = await api("GET", `${ctx.base}/tasks/${taskId}/output`);
    if (viaSocket) return;
    view.reset();
    pre.dataset.source = "poll";
    view.text(lines.map((l) => l.output + "\n").join(""));
  }

  onLeave(live.on((m) => {
    if (m.type === "output" && m.task_id === taskId) {
      if (!viaSocket) {
        viaSocket = true;
        pre.dataset.source = "live";
        if (m.seq === 1 || view.lastSeq === 0) view.reset();
      }
      view.frame(m.seq, m.data);
    } else if (m.type === "task" && m.task_id === taskId) {
      task = {...task, status: m.status, runner_id: m.runner_id,
        waiting_reason: m.waiting_reason || ""};
      renderHead();
      refresh().catch(() => {});
    } else if (m.type === "output_end" && m.task_id === taskId) {
      refresh().catch(() => {});
    }
  }));
  onLeave(live.subscribeOutput(taskId, () => view.lastSeq));
  onLeave(live.onReconnect(() => refresh().catch(() => {})));
  let finalLooks = 0;
  const timer = setInterval(async () => {
    if (live.isUp() && viaSocket) return;
    try {
      await refresh();
      if (!viaSocket) await poll();
      // An ended task changes no more; its last output may be stored just after its status,
      // so a few more looks, then stop asking.
      if (FINAL.has(task.status) && ++finalLooks > 3) clearInterval(timer);
    } catch (err) {
      if (err.status === 404) {
        clearInterval(timer);
        flash("This task no longer exists (deleted meanwhile).");
      }
    }
  }, 1000);
  onLeave(() => clearInterval(timer));
  renderHead();
  if (!live.isUp()) await poll().catch(() => {});
}
