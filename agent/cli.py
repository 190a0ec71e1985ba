"""`semaphore runner setup|register|start|unregister --config FILE`."""

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from agent.apps import available_apps, configure_apps
from agent.childwatch import use_pidfd_watcher
from agent.config import (
    RunnerConfig,
    RunnerConfigError,
    RunnerSection,
    load_runner_config,
    save_runner_config,
    write_private_file,
)
from agent.connection import Outbox, RunnerConnection
from agent.errors import RunnerError
from agent.health_addr import HealthAddressError, parse_health_addr
from agent.isolation import (
    TaskIdentity,
    check_private_file,
    forbid_inspection,
    resolve_task_identities,
)
from agent.keys import SecretOpener, create_key_pair, load_private_key
from agent.registration import register, unregister
from agent.tls import client_ssl_context, warn_if_plaintext
from agent.update import Updater, run_watchdog
from agent.worker import TaskWorker
from protocol.logs import configure_logging

if TYPE_CHECKING:
    from agent.health import HealthServer

log = structlog.get_logger("agent.cli")

STOP_DELIVERY_WAIT = 10.0  # seconds, after a second stop signal


def add_runner_commands(subparsers: argparse._SubParsersAction) -> None:
    """Attach `runner ...` to a `semaphore` parser (installed CLI and frozen runner alike)."""
    runner = subparsers.add_parser("runner", help="set up, register and run a remote runner")
    commands = runner.add_subparsers(dest="runner_command", required=True,
                                     parser_class=_SecretValueParser)

    setup = commands.add_parser("setup", help="write the runner's config file")
    _config_arg(setup)
    setup.add_argument("--web-host", help="the hub's address, e.g. http://hub:3000")
    setup.add_argument("--registration-token", help="the hub's runner registration token")
    setup.add_argument("--max-parallel-tasks", type=int, help="tasks run at once (0: no limit)")
    setup.add_argument("--tmp-path", help="where tasks are checked out and run")
    setup.add_argument("--token-file", help="file that will hold the runner's token")
    setup.add_argument("--name", help="runner name shown on the hub (default: host name)")
    setup.add_argument("--tags", help="comma-separated tags, matched by templates' runner_tag")
    setup.add_argument("--task-user", help="unprivileged user that tasks run as (the runner "
                                           "must then run as root)")
    setup.add_argument("--allow-root-tasks", action="store_true", default=None,
                       help="accept that a runner run as root without --task-user runs tasks "
                            "as root")
    setup.add_argument("--non-interactive", action="store_true",
                       help="never prompt, even at a terminal")
    setup.set_defaults(handler=cmd_setup)

    watchdog = commands.add_parser("update-watchdog", help=argparse.SUPPRESS)
    watchdog.add_argument("--marker", required=True)
    watchdog.add_argument("--log-format", choices=["json", "console"], default="json")
    watchdog.set_defaults(handler=cmd_update_watchdog)

    for name, handler, text in (
            ("register", cmd_register, "register with the hub and store the runner's token"),
            ("start", cmd_start, "connect to the hub and run tasks"),
            ("unregister", cmd_unregister, "remove this runner from the hub")):
        command = commands.add_parser(name, help=text)
        _config_arg(command)
        command.set_defaults(handler=handler)
        if name == "start":
            command.add_argument("--health-addr", metavar="HOST:PORT",
                                 help="serve GET /health and /metrics there, e.g. "
                                      "127.0.0.1:9102 (overrides runner.health_addr)")


class _SecretValueParser(argparse.ArgumentParser):
    """Takes the word after `--registration-token` as its value even when it starts with
    "-" (one random token in 64 does): argparse alone would call it an unknown option."""

    VALUE_OPTIONS = ("--registration-token",)

    def parse_known_args(self, args=None, namespace=None):
        words = list(sys.argv[1:] if args is None else args)
        joined: list[str] = []
        while words:
            word = words.pop(0)
            if word in self.VALUE_OPTIONS and words:
                word = f"{word}={words.pop(0)}"
            joined.append(word)
        return super().parse_known_args(joined, namespace)


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="runner config file (JSON)")
    parser.add_argument("--log-format", choices=["json", "console"], default="json")


def run_runner_command(args: argparse.Namespace) -> int:
    configure_logging("runner", args.log_format)
    try:
        return args.handler(args)
    except RunnerError as exc:
        print(f"semaphore runner {args.runner_command}: {exc}", file=sys.stderr)
        return exc.exit_code


# setup


def cmd_setup(args: argparse.Namespace) -> int:
    path = Path(args.config)
    existing = load_runner_config(path) if path.exists() else RunnerConfig()
    interactive = sys.stdin.isatty() and not args.non_interactive
    section = existing.runner

    def answer(flag_value, prompt: str, current):
        if flag_value is not None:
            return flag_value
        if interactive:
            shown = current if current not in (None, "") else ""
            reply = input(f"{prompt}{f' [{shown}]' if shown != '' else ''}: ").strip()
            return reply or current
        return current

    web_host = answer(args.web_host, "Hub address (e.g. http://hub:3000)", existing.web_host)
    tags = answer(args.tags, "Tags (comma-separated)", ",".join(section.tags))
    config = RunnerConfig(web_host=web_host, apps=existing.apps, runner=RunnerSection(
        registration_token=answer(args.registration_token, "Registration token",
                                  section.registration_token),
        token=section.token,
        token_file=answer(args.token_file, "Token file", section.token_file
                          or str(path.with_name("runner.token"))),
        max_parallel_tasks=_whole_number(answer, args.max_parallel_tasks,
                                         section.max_parallel_tasks, interactive),
        tmp_path=answer(args.tmp_path, "Work folder", section.tmp_path),
        webhook=section.webhook,
        private_key_file=section.private_key_file,
        name=answer(args.name, "Runner name", section.name),
        tags=[t.strip() for t in tags.split(",") if t.strip()] if isinstance(tags, str)
        else list(tags),
        server_ca_cert_file=section.server_ca_cert_file,
        skip_tls_verify=section.skip_tls_verify,
        task_user=_task_users(answer(args.task_user, "User that tasks run as (empty: this "
                                                     "user; several: comma-separated)",
                                     ",".join(existing.task_users))),
        allow_root_tasks=(section.allow_root_tasks if args.allow_root_tasks is None
                          else args.allow_root_tasks),
        release_key=section.release_key, health_addr=section.health_addr))
    config.validate(path)
    save_runner_config(path, config)
    print(f"Wrote {path}. Next: semaphore runner register --config {path}")
    return 0


def _task_users(answer: str) -> str | list[str]:
    """One user as a string (Semaphore-style scalar), several as a list."""
    names = [name.strip() for name in answer.split(",") if name.strip()]
    return names[0] if len(names) == 1 else names if names else ""


def _whole_number(answer, flag_value: int | None, current: int, interactive: bool) -> int:
    while True:
        reply = answer(flag_value, "Max parallel tasks (0: no limit)", current)
        try:
            value = int(reply)
            if value >= 0:
                return value
        except ValueError:
            pass
        if not interactive:
            raise RunnerConfigError(f"max parallel tasks must be a whole number >= 0, "
                                    f"got {reply!r}")
        print("Please answer with a whole number, 0 or more.")


# register / unregister


def cmd_register(args: argparse.Namespace) -> int:
    path = Path(args.config)
    config = load_runner_config(path)
    warn_if_plaintext(config)
    # A fresh key pair per registration: the hub seals each task's secrets to its public half.
    key_path = config.private_key_path(path)
    public_key = create_key_pair(key_path)
    token, release_key = register(config, public_key=public_key)
    if not config.runner.private_key_file or release_key != config.runner.release_key:
        # Absolute: a relative one would be taken from the config's folder again at start.
        config.runner.private_key_file = config.runner.private_key_file or os.path.abspath(
            key_path)
        config.runner.release_key = release_key
        save_runner_config(path, config)
    token_path = config.token_path(path)
    if token_path is not None:
        token_path.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(token_path, token + "\n")
        where = str(token_path)
    else:
        config.runner.token = token
        save_runner_config(path, config)
        where = f"{path} (runner.token)"
    print(f"Registered with {config.web_host}; token stored in {where}. "
          f"Next: semaphore runner start --config {path}")
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    path = Path(args.config)
    config = load_runner_config(path)
    token = _require_token(config, path)
    warn_if_plaintext(config)
    unregister(config, token)
    token_path = config.token_path(path)
    if token_path is not None:
        token_path.unlink(missing_ok=True)
    if config.runner.token:
        config.runner.token = ""
        save_runner_config(path, config)
    print(f"Unregistered from {config.web_host}.")
    return 0


def _require_token(config: RunnerConfig, path: Path) -> str:
    token = config.read_token(path)
    if not token:
        raise RunnerConfigError(
            f"{path}: this runner has no token yet; run "
            f"`semaphore runner register --config {path}` first")
    return token


# update-watchdog (started by agent/update.py from the previous build; not for people)


def cmd_update_watchdog(args: argparse.Namespace) -> int:
    return run_watchdog(Path(args.marker))


# start


def cmd_start(args: argparse.Namespace) -> int:
    path = Path(args.config)
    config = load_runner_config(path)
    if args.health_addr is not None:
        try:
            parse_health_addr(args.health_addr)
        except HealthAddressError as exc:
            raise RunnerConfigError(f"--health-addr (runner.health_addr) {exc}") from None
        config.runner.health_addr = args.health_addr
    token = _require_token(config, path)
    # Everything the runner writes (spool, checkouts) is its own; tasks get their own folder.
    os.umask(0o077)
    configure_apps(config.apps)
    identities = resolve_task_identities(config.task_users, config.runner.allow_root_tasks,
                                         config.runner.max_parallel_tasks)
    forbid_inspection()
    key_path = config.private_key_path(path)
    for private in (path, config.token_path(path), key_path):
        if private is not None:
            check_private_file(private)
    _warn_if_shared(identities)
    if key_path.exists():
        opener = SecretOpener(load_private_key(key_path))
    else:
        log.warning("runner.no_private_key", path=str(key_path),
                    consequence="tasks with secrets will be rejected; run register again")
        opener = SecretOpener(None)
    use_pidfd_watcher()  # no thread per task process (agent/childwatch.py)
    return asyncio.run(_serve(config, token, opener, identities))


def _warn_if_shared(identities: list[TaskIdentity]) -> None:
    if identities[0].separate:
        log.info("runner.task_users", users=[i.name for i in identities])
        return
    log.warning("runner.shared_identity", user=identities[0].name,
                consequence="tasks run as the runner's own user and can read its token and "
                            "key; the hub shows this runner as shared identity. Run the "
                            "runner as root with runner.task_user set to isolate tasks")


async def _serve(config: RunnerConfig, token: str, opener: SecretOpener,
                 identities: list[TaskIdentity]) -> int:
    warn_if_plaintext(config)
    url = config.websocket_url()
    # Built once for every reconnect; logs runner.tls.unverified if verification is off.
    ssl_context = client_ssl_context(config) if url.startswith("wss:") else None
    outbox = Outbox()
    worker = TaskWorker(config.state_folder, config.runner.max_parallel_tasks,
                        emit=outbox.emit, opener=opener, identities=identities)
    worker.recover()  # what a crashed or killed earlier run left in the spool
    connection = RunnerConnection(url, token, worker, outbox,
                                  name=config.display_name, tags=config.runner.tags,
                                  disk_path=str(config.state_folder), ssl_context=ssl_context)
    stop = asyncio.Event()
    drain = asyncio.Event()
    updater = Updater(config, token, worker, outbox.emit, connection.send_heartbeat,
                      outbox.flushed, stopping=drain.is_set)
    connection.update_error = updater.startup()
    connection.on_update = updater.handle
    connection.on_welcome = updater.welcomed
    signals_seen = 0

    def on_signal(signame: str) -> None:
        # First SIGTERM/SIGINT: drain (no new tasks, finish and deliver the running ones).
        # Second: stop the running tasks now; they are reported as stopped, and if the hub
        # cannot be told within STOP_DELIVERY_WAIT the runner exits anyway: the spool keeps
        # their output and end for the next start to deliver. Third: exit now.
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("runner.draining", signal=signame, running=worker.running_ids)
            worker.draining = True
            connection.send_heartbeat()
            drain.set()
        elif signals_seen == 2:
            log.info("runner.stopping_tasks", signal=signame, running=worker.running_ids)
            worker.stop_all(f"runner stopped ({signame})")
            loop.call_later(STOP_DELIVERY_WAIT, stop.set)
        else:
            log.warning("runner.exiting_now", signal=signame, held=len(worker.tasks))
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)

    async def stop_when_drained() -> None:
        await drain.wait()
        await worker.wait_idle()
        stop.set()

    health = await _start_health(config, connection, worker)
    drainer = asyncio.create_task(stop_when_drained())
    log.info("runner.starting", url=connection.url, name=config.display_name,
             tags=config.runner.tags, max_parallel_tasks=config.runner.max_parallel_tasks,
             apps=sorted(available_apps()))
    try:
        await connection.run(stop)
    finally:
        drainer.cancel()
        if health is not None:
            await health.close()
    log.info("runner.stopped")
    return 0


async def _start_health(config: RunnerConfig, connection: RunnerConnection,
                        worker: TaskWorker) -> "HealthServer | None":
    """The health address, if configured; one that cannot be bound ends the start."""
    addr = config.runner.health_addr
    if not addr:
        return None
    # Loaded only here: a runner without a health address never imports the server part.
    from agent.health import HealthServer, RunnerHealth

    server = HealthServer(RunnerHealth(connection, worker))
    try:
        await server.start(addr)
    except OSError as exc:
        raise RunnerConfigError(f"cannot serve runner.health_addr {addr}: "
                                f"{exc.strerror or exc}") from None
    return server
