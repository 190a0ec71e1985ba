// The event log (Semaphore's events, the audit trail): who changed what, newest first.
// A project's Activity tab, and #/events: every project the user is a member of (admins:
// everything, with the events of no project such as users and global runners).
import {api, clear, h, when} from "./h.js";
import {session} from "./app.js";

// Semaphore's /events/last: the newest 200 are what a page shows.
function eventTable(rows, withProject) {
  const heads = ["Time", "User", ...(withProject ? ["Project"] : []), "Object", "Description"];
  return h("div.table-wrap", h("table.events",
    h("thead", h("tr", heads.map((t) => h("th", {scope: "col"}, t)))),
    h("tbody", rows.length ? rows.map((e) => h("tr", {"data-event": e.object_type},
      h("td", h("time", {datetime: e.created}, when(e.created))),
      // No user: the hub itself (a schedule) or a runner acting on its own.
      h("td", e.username ?? h("span.muted", "system")),
      withProject ? h("td", e.project_id
        ? h("a", {href: `#/project/${e.project_id}/activity`}, e.project_name ?? "")
        : (e.project_name ?? h("span.muted", "—"))) : null,
      h("td", h("span.object-type", e.object_type), e.object_name ? ` ${e.object_name}` : ""),
      h("td", e.description)))
      : h("tr", h("td", {colspan: heads.length}, "No events yet.")))));
}

export async function activityTab(ctx) {
  const rows = await api("GET", `${ctx.base}/events/last`);
  clear(ctx.content, h("div.page-head", h("h2", "Activity")), eventTable(rows, false));
}

export async function eventsPage() {
  const page = document.getElementById("page");
  const rows = await api("GET", "/api/events/last");
  clear(page, h("div.page-head", h("h1", "Activity")),
    h("p.muted", session.user.admin
      ? "Changes in every project, and to users and runners, newest first."
      : "Changes in the projects you are a member of, newest first."),
    eventTable(rows, true));
}
