"""The hub's parts, built once per application and reached from handlers via `app[HUB]`."""

from dataclasses import dataclass

from aiohttp import web
from nacl.signing import SigningKey

from hub.config import HubConfig
from hub.core.dispatcher import Dispatcher
from hub.core.events import EventBus
from hub.core.health import Readiness
from hub.core.lifecycle import TaskLifecycle
from hub.core.metrics import MetricsHistory
from hub.core.output_writer import OutputWriter
from hub.core.reports import RunnerReports
from hub.core.rollout import Rollouts
from hub.core.schedules import Scheduler
from hub.core.tasks import TaskService
from hub.core.telemetry import HubTelemetry
from hub.crypto import SecretCipher
from hub.store import Store


@dataclass
class Hub:
    config: HubConfig
    store: Store
    events: EventBus
    lifecycle: TaskLifecycle
    dispatcher: Dispatcher
    writer: OutputWriter
    reports: RunnerReports
    tasks: TaskService
    cipher: SecretCipher
    rollout: Rollouts
    release_key: SigningKey
    # The runners' resource history: raw, per minute, per hour (the dashboard's charts).
    metrics: MetricsHistory
    # Prometheus metrics (hub/core/telemetry.py) and /api/ready (hub/core/health.py).
    telemetry: HubTelemetry
    readiness: Readiness
    # Cron and run-once schedules (hub/core/schedules.py); set once the hub has started.
    scheduler: Scheduler | None = None


HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
# The authenticated user (a row of the user table), set by the auth middleware.
USER: web.RequestKey[dict] = web.RequestKey("user", dict)
# The project of a /api/project/{project_id}/... URL, once access to it was checked.
PROJECT: web.RequestKey[dict] = web.RequestKey("project", dict)
