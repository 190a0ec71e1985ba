// Views (Semaphore's named tabs of templates): the sub-tabs above the templates list, "All"
// and then each view in position order; managers create, rename, delete and move them.
import {api, confirmAction, describe, dialog, field, flash, form, h, input} from "./h.js";
import {can} from "./project.js";

// The project's views in the order their tabs show (position, then id for ties).
export async function projectViews(ctx) {
  const views = await api("GET", `${ctx.base}/views`);
  return views.sort((a, b) => a.position - b.position || a.id - b.id);
}

// The view chosen in the address (#/project/1/templates?view=3), or null for All.
export function currentView() {
  const id = Number(new URLSearchParams(location.hash.split("?")[1] || "").get("view"));
  return Number.isInteger(id) && id > 0 ? id : null;
}

// The sub-tabs and (for managers) their buttons. `again` redraws the templates tab.
export function viewTabs(ctx, views, current, again) {
  const manage = can(ctx.role, "manager");
  const base = `#/project/${ctx.projectId}/templates`;
  const view = views.find((v) => v.id === current) || null;
  const index = view ? views.indexOf(view) : -1;
  const go = (id) => {
    const target = id ? `${base}?view=${id}` : base;
    if (location.hash === target) again();
    else location.hash = target;
  };
  const named = (title, label, action) => {
    const f = form([field("Title", input("title", {value: title}))], label, async (v) => {
      await action(v.title);
      d.close();
    });
    const d = dialog(label === "Create" ? "Add view" : "Rename view", f);
    f.elements.title.focus();
  };
  const create = () => named("", "Create", async (title) => {
    const made = await api("POST", `${ctx.base}/views`,
      {title, position: views.length ? Math.max(...views.map((v) => v.position)) + 1 : 0});
    go(made.id);
  });
  const rename = () => named(view.title, "Save", async (title) => {
    await api("PUT", `${ctx.base}/views/${view.id}`, {title, position: view.position});
    again();
  });
  const remove = async () => {
    if (!(await confirmAction(`Delete view "${view.title}"? Its templates stay, in no view.`))) return;
    try {
      await api("DELETE", `${ctx.base}/views/${view.id}`);
    } catch (err) {
      flash(describe(err));
    }
    go(null);
  };
  // Every view gets its index as position: one request, and ties from older data end.
  const move = async (step) => {
    const order = views.slice();
    order.splice(index, 1);
    order.splice(index + step, 0, view);
    const positions = Object.fromEntries(order.map((v, i) => [String(v.id), i]));
    try {
      await api("POST", `${ctx.base}/views/positions`, positions);
    } catch (err) {
      flash(describe(err));
    }
    again();
  };
  const link = (id, label) => h("li", h("a", {href: id ? `${base}?view=${id}` : base,
    "aria-current": (id || null) === (view ? view.id : null) ? "page" : null}, label));
  return h("div.views",
    h("nav.tabs.subtabs", {"aria-label": "Views"},
      h("ul", link(null, "All"), views.map((v) => link(v.id, v.title)))),
    manage ? h("div.buttons.view-buttons",
      h("button", {type: "button", onclick: create}, "Add view"),
      view ? [
        h("button", {type: "button", onclick: rename}, "Rename view"),
        h("button", {type: "button", onclick: () => move(-1), disabled: index === 0,
          "aria-label": "Move view left"}, "◀ Move left"),
        h("button", {type: "button", onclick: () => move(1), disabled: index === views.length - 1,
          "aria-label": "Move view right"}, "Move right ▶"),
        h("button.danger", {type: "button", onclick: remove}, "Delete view")] : null) : null);
}
