"""The hub's aiohttp application: builds the parts at start-up, stops them in order."""

import functools
import gc
import resource

import structlog
from aiohttp import web

from hub.api import live
from hub.api.middleware import auth_middleware, errors_middleware, last_resort_middleware
from hub.api.secrets import seal_environment_passwords
from hub.config import HubConfig
from hub.context import HUB, Hub
from hub.core import audit
from hub.core.dispatcher import Dispatcher
from hub.core.events import EventBus
from hub.core.gcpolicy import GcPolicy
from hub.core.health import Readiness
from hub.core.lifecycle import TaskLifecycle
from hub.core.local_runner import LocalLink
from hub.core.metrics import MetricsHistory
from hub.core.output_writer import OutputWriter
from hub.core.reports import RunnerReports
from hub.core.rollout import Rollouts
from hub.core.schedules import Scheduler
from hub.core.tasks import TaskService
from hub.core.telemetry import HubTelemetry
from hub.crypto import SecretCipher
from hub.release_key import load_release_key
from hub.routes import add_routes
from hub.serving import (
    CONNECTIONS,
    ConnectionGuard,
    connection_middleware,
    count_out_websockets,
)
from hub.store import open_store

log = structlog.get_logger("hub.app")


def create_app(config: HubConfig) -> web.Application:
    """The app; serve it with hub.serving (HubSite), which enforces the connection limits."""
    app = web.Application(middlewares=[connection_middleware, last_resort_middleware,
                                       errors_middleware, auth_middleware],
                          client_max_size=4 * 1024 * 1024)
    app[CONNECTIONS] = ConnectionGuard(config)
    app.on_response_prepare.append(count_out_websockets)
    add_routes(app)
    live.install(app)
    app.cleanup_ctx.append(_hub_context(config))
    # First of the shutdown steps: load balancers see /api/ready fail while sessions close.
    app.on_shutdown.insert(0, _not_ready)
    app.on_shutdown.append(_close_runner_sessions)
    return app


async def _not_ready(app: web.Application) -> None:
    app[HUB].readiness.shutting_down = True
    log.info("hub.shutting_down")


async def _close_runner_sessions(app: web.Application) -> None:
    """Say "going away" to every runner so they reconnect to the next hub, and let the
    session handlers end before the store closes."""
    hub = app[HUB]
    for link in list(hub.dispatcher.links.values()):
        link.close(1001, "hub shutting down")


def _hub_context(config: HubConfig):
    async def context(app: web.Application):
        raise_open_files_limit()
        store = await open_store(config.database_path)
        events = EventBus()
        cipher = SecretCipher(config.access_key_encryption)
        await seal_environment_passwords(store, cipher)  # older hubs kept them in clear
        telemetry = HubTelemetry(probe_interval=config.metrics.loop_probe_interval_sec,
                                 lag_log=config.metrics.loop_lag_log_sec)
        writer = OutputWriter(store, events, telemetry)
        lifecycle = TaskLifecycle(store, events, writer)
        dispatcher = Dispatcher(lifecycle, events, config.runner_lost_timeout)
        reports = RunnerReports(lifecycle, writer, config.max_task_output_bytes)
        tasks = TaskService(store, lifecycle, dispatcher, writer, config, cipher)
        rollout = Rollouts(store, dispatcher, config)
        hub = Hub(config, store, events, lifecycle, dispatcher, writer, reports, tasks, cipher,
                  rollout, load_release_key(config), MetricsHistory(store), telemetry,
                  Readiness(store))
        app[HUB] = hub
        telemetry.start()
        writer.start()
        hub.metrics.start()
        await tasks.restore()
        local = None
        if not config.use_remote_runner:
            local = LocalLink(reports, config.tmp_path, config.max_parallel_tasks,
                              config.max_task_duration_sec)
            local.start()
            dispatcher.attach(local)
        dispatcher.start()
        rollout.start()
        scheduler = hub.scheduler = Scheduler(
            store, tasks, zone=config.schedule_zone,
            on_fired=functools.partial(audit.record_scheduled, hub))
        scheduler.start()
        # Everything built so far lives as long as the hub: keep it out of the collector's
        # full passes, which otherwise pause the event loop for tens of ms; and so, later,
        # what survives each full pass (runner sessions): hub/core/gcpolicy.py.
        gc.freeze()
        gc_policy = GcPolicy()
        gc_policy.start()
        log.info("hub.started", database=config.database_path,
                 use_remote_runner=config.use_remote_runner)
        yield
        await gc_policy.stop()
        await scheduler.stop()
        await rollout.stop()
        await dispatcher.stop()
        if local is not None:
            await local.stop()
        await writer.stop()
        await hub.metrics.stop()
        await telemetry.stop()
        await store.close()
        log.info("hub.stopped")

    return context


def raise_open_files_limit() -> int:
    """Every runner session is a socket: lift the soft open-files limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("hub.open_files_limit", was=soft, now=hard)
    return hard
