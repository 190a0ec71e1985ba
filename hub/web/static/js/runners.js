// Runners: global (admins) or one project's (owner/manager); state, live metrics with a chart,
// add (token shown once with the set-up lines), edit, enable/disable/delete, staged updates.
import {api, bytes, clear, confirmAction, describe, dialog, field, flash, form, h, input,
  select, when} from "./h.js";
import * as live from "./live.js";
import {onLeave, session} from "./app.js";
import {sparkline} from "./spark.js";

const WINDOW_SEC = 15 * 60;

export function runnerState(r) {
  if (!r.active) return "disabled";
  if (r.online && r.draining) return "draining";
  return r.online ? "online" : "offline";
}

function apps(r) {
  const names = Object.keys(r.apps || {});
  return names.length ? names.join(", ") : "";
}

// In `container` (a project's tab content), else the whole page.
export async function runnersPage(projectId, container = null) {
  const page = container || document.getElementById("page");
  const base = projectId ? `/api/project/${projectId}/runners` : "/api/runners";
  const history = new Map(); // runner id -> [{time, cpu_percent, ...}]
  let runners = [];
  const body = h("tbody");
  const rollout = h("section.rollout");
  clear(page,
    h("div.page-head", h(projectId ? "h2" : "h1", projectId ? "Project runners" : "Runners"),
      h("button.primary", {type: "button", onclick: () => addRunner(projectId)}, "Add runner")),
    h("div.table-wrap", h("table.runners",
      h("thead", h("tr", ["Runner", "State", "Version", "Platform / apps", "Tasks", "CPU",
        "Memory", "Disk free / load", "Actions"].map(
        (t) => h("th", {scope: "col"}, t)))),
      body)),
    session.user.admin ? rollout : null);

  let refreshRollout = null;
  async function load() {
    runners = await api("GET", base);
    await Promise.all(runners.map(async (r) => {
      try {
        // Heartbeat resolution over the chart's window (the hub keeps an hour of it).
        const since = Math.floor(Date.now() / 1000 - WINDOW_SEC);
        history.set(r.id, await api("GET", `${base}/${r.id}/metrics?resolution=raw&since=${since}`));
      } catch {
        // No history from the hub: the chart grows from what this page sees.
        const points = history.get(r.id) || [];
        if (r.online && r.metrics) points.push({time: Date.now() / 1000, ...r.metrics});
        history.set(r.id, points.slice(-90));
      }
    }));
    render();
    if (refreshRollout) await refreshRollout();
  }

  function render() {
    if (!runners.length) {
      clear(body, h("tr", h("td", {colspan: 9}, "No runners yet: add one.")));
      return;
    }
    clear(body, runners.map(row));
  }

  function row(r) {
    const state = runnerState(r);
    const m = r.metrics || {};
    const points = history.get(r.id) || [];
    const cpu = points.map((p) => p.cpu_percent);
    const mem = points.map((p) => (p.memory_total ? (100 * p.memory_used) / p.memory_total : null));
    const upd = r.update || {};
    const toggle = h("button", {type: "button", onclick: () => setActive(r, !r.active)},
      r.active ? "Disable" : "Enable");
    const edit = h("button", {type: "button", onclick: () => editRunner(r)}, "Edit");
    const del = h("button.danger", {type: "button", onclick: () => remove(r)}, "Delete");
    return h("tr", {"data-runner": r.id},
      h("th", {scope: "row"}, r.name || `runner ${r.id}`, r.shared_identity
        ? h("div.warn", {title: "its tasks run as the runner's own user"}, "shared identity") : null,
        h("div.small", r.project_id ? `project ${r.project_id}` : "global",
          r.tags && r.tags.length ? ` · tags: ${r.tags.join(", ")}` : "")),
      h("td", h(`span.state.${state}`, state),
        h("div.small", {title: "last heartbeat"}, when(r.last_seen))),
      h("td", r.version || "", upd.state && upd.state !== "none"
        ? h("div.small", `update: ${upd.state}${upd.target ? " → " + upd.target : ""}`,
          upd.error ? h("div.error-text", upd.error) : null) : null),
      h("td", r.platform || "", h("div.small", apps(r))),
      h("td", `${(r.running_tasks || []).length} / ${r.max_parallel_tasks || "∞"}`),
      h("td.metric", m.cpu_percent !== undefined ? `${m.cpu_percent.toFixed(0)}%` : "",
        sparkline(cpu, {max: 100, label: `CPU of ${r.name}, last minutes`})),
      h("td.metric", m.memory_total ? `${bytes(m.memory_used)} / ${bytes(m.memory_total)}` : "",
        sparkline(mem, {max: 100, label: `memory of ${r.name}, last minutes`})),
      h("td", m.disk_free !== undefined ? bytes(m.disk_free) : "",
        m.load1 !== undefined ? h("div.small", `load ${m.load1.toFixed(2)}`) : null),
      h("td.buttons", edit, toggle, del));
  }

  // PUT sets every field: webhook and active are sent back as they are.
  function editRunner(r) {
    const f = form([
      field("Name", input("name", {value: r.name || ""})),
      field("Tags", input("tags", {value: (r.tags || []).join(", ")}), "comma-separated"),
      field("Max parallel tasks", input("max_parallel_tasks", {type: "number", min: 0,
        value: r.max_parallel_tasks || 0}),
        "0: no limit. The runner's own config sets it again when it connects."),
    ], "Save", async (v) => {
      await api("PUT", `${base}/${r.id}`, {
        name: v.name.trim(), tags: v.tags.split(",").map((t) => t.trim()).filter(Boolean),
        max_parallel_tasks: Number(v.max_parallel_tasks || 0), webhook: r.webhook || "",
        active: r.active});
      d.close();
      await load().catch((err) => flash(describe(err)));
    });
    const d = dialog(`Edit runner "${r.name || r.id}"`, f);
    d.querySelector("input").focus();
  }

  async function setActive(r, active) {
    if (!active && !(await confirmAction(`Disable runner "${r.name}"? It gets no new tasks.`,
      "Disable"))) return;
    try {
      await api("POST", `${base}/${r.id}/active`, {active});
    } catch (err) {
      flash(describe(err));
    }
    await load().catch((err) => flash(describe(err)));
  }

  async function remove(r) {
    if (!(await confirmAction(`Delete runner "${r.name}"? Its token stops working.`))) return;
    try {
      await api("DELETE", `${base}/${r.id}`);
    } catch (err) {
      flash(describe(err));
    }
    await load().catch((err) => flash(describe(err)));
  }

  onLeave(live.on((message) => {
    if (message.type === "runner_metrics") {
      const r = runners.find((x) => x.id === message.runner_id);
      if (!r) return;
      const points = history.get(r.id) || [];
      points.push({time: message.time, running: message.running, ...message.metrics});
      const cutoff = message.time - WINDOW_SEC;
      while (points.length && points[0].time < cutoff) points.shift();
      history.set(r.id, points);
      r.metrics = message.metrics;
      r.online = true;
      r.draining = message.draining;
      r.max_parallel_tasks = message.max_parallel_tasks;
      r.last_seen = message.time;
      r.running_tasks = Array.from({length: message.running || 0});
      const old = body.querySelector(`tr[data-runner="${r.id}"]`);
      if (old) old.replaceWith(row(r));
    } else if (message.type === "runner") {
      load().catch(() => {});
    }
  }));
  onLeave(live.onReconnect(() => load().catch(() => {})));
  // Refreshed now and then as well: often without the websocket, and with it for what no
  // event carries (a runner's part in an update).
  let ticks = 0;
  const timer = setInterval(() => {
    ticks++;
    if (!live.isUp() || ticks % 2 === 0) load().catch(() => {});
  }, 5000);
  onLeave(() => clearInterval(timer));
  await load();
  if (session.user.admin) {
    refreshRollout = await rolloutSection(rollout, projectId, () => runners, () => load());
  }
}

function hubUrl() {
  return location.origin;
}

export function setupText(token, {registration = true, name = "runner-1", tags = []} = {}) {
  const hub = hubUrl();
  const download = `curl -fsSLo semaphore '${hub}/api/runner/binary?arch=amd64' && curl -fsSL '${hub}/api/runner/binary.sha256?arch=amd64' | sha256sum -c - && chmod +x semaphore`;
  const config = JSON.stringify({
    web_host: hub,
    runner: {
      registration_token: registration ? token : "",
      token: registration ? "" : token,
      token_file: registration ? "/etc/semaphore/runner.token" : "",
      max_parallel_tasks: 2,
      tmp_path: "/var/lib/semaphore-runner",
      name, tags,
    },
  }, null, 2);
  const setup = registration
    ? `semaphore runner setup --config /etc/semaphore/config.runner.json \\\n    --web-host ${hub} --registration-token '${token}' \\\n    --name ${name}${tags.length ? " --tags " + tags.join(",") : ""} --max-parallel-tasks 2\nsemaphore runner register --config /etc/semaphore/config.runner.json`
    : "# the config above holds the runner's own token: no register step\nsemaphore runner start --config /etc/semaphore/config.runner.json";
  const unit = `# /etc/systemd/system/semaphore-runner.service
[Unit]
Description=Semaphore runner
After=network-online.target
Wants=network-online.target

[Service]
User=semaphore-runner
Group=semaphore-runner
ExecStart=/opt/semaphore-runner/semaphore runner start --config /etc/semaphore/config.runner.json
TimeoutStopSec=1h
KillMode=process
Restart=always
RestartSec=5
UMask=0077
Environment=TMPDIR=/var/lib/semaphore-runner/tmp
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/opt/semaphore-runner /var/lib/semaphore-runner /etc/semaphore

[Install]
WantedBy=multi-user.target`;
  return {download, config, setup, unit};
}

function copyBlock(title, text, id) {
  const pre = h("pre.code", {id, tabindex: 0}, text);
  const copy = h("button.small", {type: "button", onclick: async () => {
    try { await navigator.clipboard.writeText(text); copy.textContent = "Copied"; } catch {
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
  }}, "Copy");
  return h("div.copy-block", h("div.copy-head", h("h3", title), copy), pre);
}

function addRunner(projectId) {
  const useRegistration = session.user.admin;
  const f = form([
    field("Name", input("name", {value: "runner-1"})),
    field("Tags", input("tags", {placeholder: "prod, web"}), "comma-separated"),
    useRegistration ? field("Valid for (minutes)", input("expires", {type: "number", value: 60,
      min: 1})) : null,
  ], useRegistration ? "Create registration token" : "Create runner", async (v) => {
    const tags = v.tags.split(",").map((t) => t.trim()).filter(Boolean);
    let token;
    if (useRegistration) {
      const body = {tags, expires_in_sec: Math.round(Number(v.expires || 60) * 60)};
      if (projectId) body.project_id = projectId;
      token = (await api("POST", "/api/runners/registration_tokens", body)).token;
    } else {
      token = (await api("POST", `/api/project/${projectId}/runners`,
        {name: v.name, tags})).token;
    }
    const text = setupText(token, {registration: useRegistration, name: v.name || "runner-1", tags});
    clear(d.querySelector(".dialog-body"),
      h("p.notice", "This token is shown only once: copy it now."),
      h("p", h("strong", useRegistration ? "Registration token: " : "Runner token: "),
        h("code#new-token", token)),
      copyBlock("1. Download the runner from this hub", text.download, "setup-download"),
      copyBlock("2. config.runner.json", text.config, "setup-config"),
      copyBlock(useRegistration ? "3. Set up and register" : "3. Start it", text.setup,
        "setup-command"),
      copyBlock("4. systemd unit", text.unit, "setup-unit"));
  });
  const d = dialog("Add runner", h("div.dialog-body", f));
  d.classList.add("wide");
  d.querySelector("input").focus();
}

// The staged update: its state and where the runners stand (redrawn on every refresh of
// the list), and the form that starts one (built once: a refresh never eats what is typed).
async function rolloutSection(box, projectId, listed, onStarted) {
  const status = h("div.rollout-status", {"aria-live": "polite"});
  const f = form([
    field("Version", input("version", {placeholder: "0.2.0"})),
    field("Canary runners first", input("canary", {type: "number", value: 1, min: 0})),
    field("Healthy minutes before the rest", input("healthy_minutes", {type: "number",
      value: 10, min: 0})),
  ], "Start rollout", async (v) => {
    const body = {version: v.version, canary: Number(v.canary || 0),
      healthy_minutes: Number(v.healthy_minutes || 0)};
    if (projectId) body.project_id = projectId;
    await api("PUT", "/api/runners/update", body);
    await onStarted();
  });

  async function show() {
    let current = null;
    try { current = await api("GET", "/api/runners/update"); } catch { current = null; }
    const state = current && current.state && current.state !== "none" ? current : null;
    const stop = state && state.state === "running"
      ? h("button.danger", {type: "button", onclick: async () => {
        if (!(await confirmAction("Stop the rollout? Runners not yet told are not told.", "Stop"))) return;
        try { await api("DELETE", "/api/runners/update"); } catch (err) { flash(describe(err)); }
        await show();
      }}, "Stop rollout") : null;
    // Where it stands: the runners by their part in the update.
    const counts = {};
    for (const r of listed()) {
      const part = (r.update && r.update.state) || "none";
      counts[part] = (counts[part] || 0) + 1;
    }
    const standing = Object.entries(counts).filter(([part]) => part !== "none")
      .map(([part, n]) => `${n} ${part}`).join(", ");
    clear(status,
      state ? h("p.rollout-state", `Rollout to ${state.version || "?"}: ${state.state}`,
        state.error ? h("span.error-text", ` (${state.error})`) : null,
        state.canary !== undefined ? ` · canary ${state.canary}` : "") : h("p", "No rollout."),
      standing ? h("p.rollout-standing", "Runners: ", standing) : null,
      stop);
  }
  clear(box, h("h2", "Runner updates"), status, f);
  await show();
  return show;
}
