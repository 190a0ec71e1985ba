// The dashboard: login, layout and the #/... router.
import {api, clear, field, form, h, input, setUnauthorizedHandler} from "./h.js";
import * as live from "./live.js";
import {eventsPage} from "./events.js";
import {runnersPage} from "./runners.js";
import {projectPage, projectsPage} from "./project.js";
import {membersPage, tokensPage, usersPage} from "./admin.js";

export const session = {user: null};
let cleanup = [];

// Pages register what to undo when the route changes (listeners, subscriptions, timers).
export function onLeave(fn) { cleanup.push(fn); }

const routes = [
  [/^#\/runners$/, () => runnersPage(null)],
  [/^#\/events$/, () => eventsPage()],
  [/^#\/users$/, () => usersPage()],
  [/^#\/tokens$/, () => tokensPage()],
  [/^#\/project\/(\d+)\/members$/, (p) => membersPage(+p)],
  [/^#\/project\/(\d+)\/runners$/, (p) => runnersPage(+p)],
  [/^#\/project\/(\d+)(?:\/([a-z]+))?(?:\/(\d+))?$/, (p, tab, id) => projectPage(+p, tab, id && +id)],
  [/^#?\/?$|^#\/projects$/, () => projectsPage()],
];

function loginPage(message) {
  live.stop();
  const root = document.getElementById("app");
  const f = form([
    field("Login", input("auth", {autocomplete: "username", required: true, autofocus: true})),
    field("Password", input("password", {type: "password", autocomplete: "current-password",
      required: true})),
  ], "Sign in", async (v) => {
    await api("POST", "/api/auth/login", {auth: v.auth, password: v.password});
    await boot();
  });
  clear(root, h("main.login", h("h1", "Semaphore"), message ? h("p.form-error", message) : null, f));
  f.querySelector("input").focus();
}

async function logout() {
  try { await api("POST", "/api/auth/logout"); } catch { /* gone anyway */ }
  session.user = null;
  loginPage("You are signed out.");
}

function layout() {
  const user = session.user;
  const links = [["#/projects", "Projects"], ["#/events", "Activity"]];
  if (user.admin) links.push(["#/runners", "Runners"], ["#/users", "Users"]);
  links.push(["#/tokens", "API tokens"]);
  const nav = h("nav.top", {"aria-label": "Main"},
    h("a.brand", {href: "#/projects"}, "Semaphore"),
    h("ul", links.map(([href, label]) => h("li", h("a", {href, "data-nav": href}, label)))),
    h("span.who", user.name || user.username, user.admin ? " (admin)" : ""),
    h("button.link", {type: "button", onclick: logout}, "Sign out"));
  clear(document.getElementById("app"), h("a.skip", {href: "#page", onclick: (event) => {
    event.preventDefault();
    document.getElementById("page").focus();
  }}, "Skip to content"), h("header", nav), h("div#flash"),
    h("main#page", {tabindex: -1}));
}

async function route() {
  for (const fn of cleanup.splice(0)) { try { fn(); } catch (err) { console.error(err); } }
  const hash = location.hash || "#/projects";
  const old = document.getElementById("page");
  if (!old || !session.user) return;
  // A fresh element per visit: a slow page still rendering after the user moved on writes
  // into its own, detached element, never over the page now shown.
  const page = h("main#page", {tabindex: -1});
  old.replaceWith(page);
  const flash = document.getElementById("flash");
  if (flash) clear(flash);
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (hash.startsWith(a.dataset.nav)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [pattern, render] of routes) {
    const m = pattern.exec(hash.split("?")[0]);
    if (m) {
      try {
        await render(...m.slice(1));
      } catch (err) {
        clear(page, h("div.flash.error", {role: "alert"},
          err.status === 404 ? "Not found: it may have been deleted. " : "Cannot show this page: ",
          err.message || String(err)), h("p", h("a", {href: "#/projects"}, "Back to projects")));
      }
      return;
    }
  }
  clear(page, h("p", "No such page. "), h("a", {href: "#/projects"}, "Projects"));
}

async function boot() {
  try {
    session.user = await api("GET", "/api/user");
  } catch {
    loginPage();
    return;
  }
  layout();
  live.start();
  await route();
}

setUnauthorizedHandler(() => {
  if (session.user) {
    session.user = null;
    loginPage("Your session ended: please sign in again.");
  }
});
window.addEventListener("hashchange", route);
boot();
