"""The hub's whole URL surface, on one screen."""

from collections.abc import Awaitable, Callable

from aiohttp import web

from hub import gateway
from hub import web as dashboard
from hub.api import (
    backup,
    events,
    integrations,
    live,
    monitoring,
    projects,
    resources,
    runner_binary,
    runners,
    schedules,
    session,
    system,
    tasks,
    users,
    views,
    webhook,
)
from hub.routing import SegmentIndex

P = "/api/project/{project_id:\\d+}"
RESOURCE = "{resource:keys|repositories|inventory|environment|templates|views}"
# An integration's matchers and extract values (Semaphore's /matchers and /values).
INTEGRATION_ROWS = "integrations/{integration_id}/{kind:matchers|values}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ROUTES: list[tuple[str, str, Handler]] = [
    # The web dashboard (hub/web): one page, its files, and #/... routes in the browser.
    ("GET", "/", dashboard.index),
    ("GET", "/static/{path:.+}", dashboard.static),
    ("GET", "/api/ping", system.ping),
    ("GET", "/api/info", system.info),
    # Prometheus metrics (Semaphore 2.20 serves them at /api/metrics), liveness, readiness.
    ("GET", "/metrics", monitoring.metrics),
    ("GET", "/api/metrics", monitoring.metrics),
    ("GET", "/api/health", monitoring.health),
    ("GET", "/api/ready", monitoring.ready),
    # Live updates for the browser (task, runner and output events): hub/api/live.py.
    ("GET", "/api/ws", live.browser_websocket),
    # Sessions and API tokens.
    ("GET", "/api/auth/login", session.login_metadata),
    ("POST", "/api/auth/login", session.login),
    ("POST", "/api/auth/logout", session.logout),
    ("GET", "/api/user", session.get_user),
    ("GET", "/api/user/tokens", session.list_tokens),
    ("POST", "/api/user/tokens", session.create_token),
    ("DELETE", "/api/user/tokens/{api_token_id}", session.delete_token),
    # Users (admins) and each user's own profile and password.
    ("GET", "/api/users", users.list_users),
    ("POST", "/api/users", users.create_user),
    ("GET", "/api/users/{user_id}", users.get_user),
    ("PUT", "/api/users/{user_id}", users.update_user),
    ("DELETE", "/api/users/{user_id}", users.delete_user),
    ("POST", "/api/users/{user_id}/password", users.set_password),
    # The event log (audit trail): every project the user is a member of, or one project.
    ("GET", "/api/events", events.list_events),
    ("GET", "/api/events/last", events.list_events),
    ("GET", f"{P}/events", events.list_project_events),
    ("GET", f"{P}/events/last", events.list_project_events),
    # Projects.
    ("GET", "/api/projects", projects.list_projects),
    ("POST", "/api/projects", projects.create_project),
    # Semaphore's backup format: a project to JSON, and JSON to a new project.
    ("POST", "/api/projects/restore", backup.restore),
    ("GET", f"{P}/backup", backup.get_backup),
    ("GET", P, projects.get_project),
    ("PUT", P, projects.update_project),
    ("DELETE", P, projects.delete_project),
    # Members (owners manage them).
    ("GET", f"{P}/users", users.list_members),
    ("POST", f"{P}/users", users.add_member),
    ("PUT", f"{P}/users/{{user_id}}", users.set_member_role),
    ("DELETE", f"{P}/users/{{user_id}}", users.remove_member),
    # Views (Semaphore's groups of templates): their order at once, and one view's templates.
    ("POST", f"{P}/views/positions", views.set_positions),
    ("GET", f"{P}/views/{{view_id}}/templates", views.view_templates),
    # Keys, repositories, inventory, environments, templates, views.
    ("GET", f"{P}/{RESOURCE}", resources.list_rows),
    ("POST", f"{P}/{RESOURCE}", resources.create_row),
    ("GET", f"{P}/{RESOURCE}/{{item_id}}", resources.get_row),
    ("PUT", f"{P}/{RESOURCE}/{{item_id}}", resources.update_row),
    ("DELETE", f"{P}/{RESOURCE}/{{item_id}}", resources.delete_row),
    # Semaphore's "stop all" button of a template.
    ("POST", f"{P}/templates/{{template_id}}/stop_all_tasks", tasks.stop_all_tasks),
    # Schedules: cron or run-once starts of a template (hub/core/schedules.py runs them).
    ("GET", f"{P}/schedules", schedules.list_schedules),
    ("POST", f"{P}/schedules", schedules.create_schedule),
    # Before {schedule_id}, which would otherwise take "validate".
    ("POST", f"{P}/schedules/validate", schedules.validate_cron),
    ("GET", f"{P}/schedules/{{schedule_id}}", schedules.get_schedule),
    ("PUT", f"{P}/schedules/{{schedule_id}}", schedules.update_schedule),
    ("DELETE", f"{P}/schedules/{{schedule_id}}", schedules.delete_schedule),
    ("PUT", f"{P}/schedules/{{schedule_id}}/active", schedules.set_active),
    ("GET", f"{P}/templates/{{template_id}}/schedules", schedules.template_schedules),
    # Integrations: a webhook starts a template's task (hub/api/integrations.py). The
    # project's aliases come before {integration_id}, which would otherwise take "aliases".
    ("GET", f"{P}/integrations", integrations.list_integrations),
    ("POST", f"{P}/integrations", integrations.create_integration),
    ("GET", f"{P}/integrations/aliases", integrations.list_aliases),
    ("POST", f"{P}/integrations/aliases", integrations.create_alias),
    ("DELETE", f"{P}/integrations/aliases/{{alias_id}}", integrations.delete_alias),
    ("GET", f"{P}/integrations/{{integration_id}}", integrations.get_integration),
    ("PUT", f"{P}/integrations/{{integration_id}}", integrations.update_integration),
    ("DELETE", f"{P}/integrations/{{integration_id}}", integrations.delete_integration),
    ("GET", f"{P}/{INTEGRATION_ROWS}", integrations.list_rows),
    ("POST", f"{P}/{INTEGRATION_ROWS}", integrations.create_row),
    ("GET", f"{P}/{INTEGRATION_ROWS}/{{row_id}}", integrations.get_row),
    ("PUT", f"{P}/{INTEGRATION_ROWS}/{{row_id}}", integrations.update_row),
    ("DELETE", f"{P}/{INTEGRATION_ROWS}/{{row_id}}", integrations.delete_row),
    ("GET", f"{P}/integrations/{{integration_id}}/aliases", integrations.list_aliases),
    ("POST", f"{P}/integrations/{{integration_id}}/aliases", integrations.create_alias),
    ("DELETE", f"{P}/integrations/{{integration_id}}/aliases/{{alias_id}}",
     integrations.delete_alias),
    # The webhook itself: public, authenticated by the integration's own auth method.
    ("POST", "/api/integrations/{alias}", webhook.receive),
    # Tasks.
    ("GET", f"{P}/tasks", tasks.list_tasks),
    ("POST", f"{P}/tasks", tasks.create_task),
    ("GET", f"{P}/tasks/last", tasks.list_tasks),
    ("GET", f"{P}/tasks/{{task_id}}", tasks.get_task),
    ("DELETE", f"{P}/tasks/{{task_id}}", tasks.delete_task),
    ("GET", f"{P}/tasks/{{task_id}}/output", tasks.task_output),
    ("GET", f"{P}/tasks/{{task_id}}/raw_output", tasks.task_raw_output),
    ("POST", f"{P}/tasks/{{task_id}}/stop", tasks.stop_task),
    # A terraform task's plan waits for one of these (status waiting_confirmation).
    ("POST", f"{P}/tasks/{{task_id}}/confirm", tasks.confirm_task),
    ("POST", f"{P}/tasks/{{task_id}}/reject", tasks.reject_task),
    # Runners: global (admin) and per project (owner/manager).
    ("GET", "/api/runners", runners.list_runners),
    ("POST", "/api/runners", runners.create_runner),
    # One-time registration tokens (admin); before /api/runners/{runner_id}, which would
    # otherwise take "registration_tokens" (or "update") for a runner id.
    # Staged runner updates (admin): a target version, globally, per project or per runner.
    ("GET", "/api/runners/update", runners.get_rollout),
    ("PUT", "/api/runners/update", runners.start_rollout),
    ("DELETE", "/api/runners/update", runners.stop_rollout),
    ("GET", "/api/runners/registration_tokens", runners.list_registration_tokens),
    ("POST", "/api/runners/registration_tokens", runners.create_registration_token),
    ("DELETE", "/api/runners/registration_tokens/{token_id}",
     runners.delete_registration_token),
    ("GET", "/api/runners/{runner_id}", runners.get_runner),
    ("PUT", "/api/runners/{runner_id}", runners.update_runner),
    ("DELETE", "/api/runners/{runner_id}", runners.delete_runner),
    ("POST", "/api/runners/{runner_id}/active", runners.set_active),
    ("GET", "/api/runners/{runner_id}/metrics", runners.runner_metrics),
    ("GET", f"{P}/runners", runners.list_runners),
    ("POST", f"{P}/runners", runners.create_runner),
    ("GET", f"{P}/runners/{{runner_id}}", runners.get_runner),
    ("PUT", f"{P}/runners/{{runner_id}}", runners.update_runner),
    ("DELETE", f"{P}/runners/{{runner_id}}", runners.delete_runner),
    ("POST", f"{P}/runners/{{runner_id}}/active", runners.set_active),
    ("GET", f"{P}/runners/{{runner_id}}/metrics", runners.runner_metrics),
    ("GET", f"{P}/runner_tags", runners.runner_tags),
    # The runner build, public like Jenkins' agent.jar (updates check its signature).
    ("GET", "/api/runner/binary", runner_binary.binary),
    ("GET", "/api/runner/binary.sha256", runner_binary.sha256),
    ("GET", "/api/runner/binary.sig", runner_binary.signature),
    # The runners' own endpoints (authenticated by registration or runner token).
    ("POST", "/api/internal/runners", runners.register_runner),
    ("DELETE", "/api/internal/runners", runners.unregister_self),
    ("GET", "/api/internal/runners/ws", gateway.runner_websocket),
]


def add_routes(app: web.Application) -> None:
    # The project's routes are found by the word after the project id (hub/routing.py).
    projects_index = SegmentIndex("/api/project")
    for method, path, handler in ROUTES:
        add = (projects_index.add_route if path.startswith(P)
               else app.router.add_route)
        add(method, path, handler)
        if method == "GET" and not path.startswith("/api/"):
            # The dashboard's pages and files answer HEAD too (proxies and checkers ask).
            add("HEAD", path, handler)
        # Semaphore's clients use some paths with a trailing slash (/api/user/, /project/1/).
        if not path.endswith("/") and not path.startswith("/static/"):
            add(method, path + "/", handler)
    app.router.register_resource(projects_index)
