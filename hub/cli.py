"""The `semaphore` command: server, user, runner (the runner's own commands) and quickstart."""

import argparse
import asyncio
import os
import signal
import ssl
import sys
from pathlib import Path

import structlog
from aiohttp import web

from agent.cli import add_runner_commands, run_runner_command
from agent.isolation import IsolationError, prepare_private_folder
from hub.config import ConfigError, HubConfig, load_config
from hub.errors import HubError
from protocol.logs import configure_logging
from protocol.version import PACKAGE_VERSION

log = structlog.get_logger("hub.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semaphore", description="A self-hosted task hub and its remote runners, "
        "shaped like Semaphore UI. `semaphore quickstart` starts a whole system.")
    parser.add_argument("--version", action="version", version=f"semaphore {PACKAGE_VERSION}")
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run the hub (API, runner sessions, tasks)")
    server.add_argument("--config", help="hub config file (JSON); SEMAPHORE_* env wins")
    server.add_argument("--log-format", choices=["json", "console"], default="json")
    server.set_defaults(handler=cmd_server)

    user = commands.add_parser("user", help="manage users")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="create a user")
    add.add_argument("--config", help="hub config file (JSON)")
    add.add_argument("--login", required=True)
    add.add_argument("--password", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--admin", action="store_true")
    add.set_defaults(handler=cmd_user_add)

    binaries = commands.add_parser("runner-binary", help="runner builds this hub serves and "
                                                          "updates runners to")
    binary_commands = binaries.add_subparsers(dest="binary_command", required=True)
    add_binary = binary_commands.add_parser(
        "add", help="copy a runner build into runner_binaries_path, with its sha256 and "
                    "its signature by the hub's release key")
    add_binary.add_argument("file", help="the single-file runner (build/build_runner.sh)")
    add_binary.add_argument("--config", help="hub config file (JSON)")
    add_binary.add_argument("--version", dest="build_version",
                            help="its version (default: what `FILE --version` says)")
    add_binary.add_argument("--arch", default="amd64", help="amd64 (default), arm64, ...")
    add_binary.set_defaults(handler=cmd_runner_binary_add)

    quick = commands.add_parser("quickstart", help="a hub, an admin and a local runner, "
                                                   "all on embedded defaults")
    quick.add_argument("--dir", default=".semaphore", help="where everything is kept")
    quick.add_argument("--port", type=int, default=3000)
    quick.add_argument("--with-binary", action="store_true",
                       help="also build the single-file runner (PyInstaller, in the "
                            "background) into runner_binaries_path, served to runner hosts")
    quick.set_defaults(handler=cmd_quickstart)

    add_runner_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "runner":
        return run_runner_command(args)
    try:
        return args.handler(args)
    except HubError as exc:
        print(f"semaphore {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code


def cmd_server(args: argparse.Namespace) -> int:
    configure_logging("hub", args.log_format)
    # The database (password hashes, sealed secrets) and the embedded runner's folders are
    # the hub's alone.
    os.umask(0o077)
    config = load_config(args.config)
    # Fail before listening if the database or the embedded runner's folder cannot be used.
    asyncio.run(_check_store(config))
    if not config.use_remote_runner:
        try:
            prepare_private_folder(Path(config.tmp_path))
        except IsolationError as exc:
            raise ConfigError(f"`tmp_path`: {exc}") from None
    run_server(config)
    return 0


def run_server(config: HubConfig) -> None:
    from hub.app import create_app
    from hub.tls import server_ssl_context

    # Built before anything listens: a bad certificate or key stops the hub (ConfigError).
    ssl_context = server_ssl_context(config.tls)
    scheme = "https" if ssl_context is not None else "http"
    address = config.web_host or f"{scheme}://{config.interface}:{config.port}"
    print(f"semaphore hub listening on {address}", flush=True)
    asyncio.run(_serve_until_signal(create_app(config), config, ssl_context))


async def _serve_until_signal(app: web.Application, config: HubConfig,
                              ssl_context: ssl.SSLContext | None) -> None:
    """web.run_app's job (it cannot take hub.serving's guarded site): serve until SIGINT or
    SIGTERM, then shut down in order."""
    from hub.serving import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(app, config, ssl_context, stop)


async def _check_store(config: HubConfig) -> None:
    from hub.store import open_store

    store = await open_store(config.database_path)
    await store.close()


def cmd_user_add(args: argparse.Namespace) -> int:
    from hub.core.audit import event_values
    from hub.security import hash_password
    from hub.store import open_store

    config = load_config(args.config)

    async def add() -> dict:
        store = await open_store(config.database_path)
        try:
            user = await store.create_user(args.login, args.name, args.email,
                                           hash_password(args.password), admin=args.admin)
            # In the audit trail too, with no user: it was made at the hub's console.
            await store.add_event(event_values(
                "user", f"User {user['username']} created (semaphore user add)",
                object_id=user["id"], object_name=user["username"]))
            return user
        finally:
            await store.close()

    user = asyncio.run(add())
    role = "admin" if user["admin"] else "user"
    print(f"created {role} {user['username']} (id {user['id']}) in {config.database_path}")
    return 0


def cmd_runner_binary_add(args: argparse.Namespace) -> int:
    from hub.release_key import load_release_key, release_key_path
    from hub.runner_binaries import BinaryError, add_binary, build_version

    config = load_config(args.config)
    source = Path(args.file)
    try:
        if not source.is_file():
            raise BinaryError(f"{source} is not a file")
        version = args.build_version or build_version(source.resolve())
        added = add_binary(config.runner_binaries_path, load_release_key(config), source,
                           version, args.arch)
    except BinaryError as exc:
        raise ConfigError(str(exc)) from None
    print(f"added runner {added.version} for linux/{added.arch}: {added.path} "
          f"(sha256 {added.sha256}, signed with {release_key_path(config)})")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from hub.quickstart import quickstart

    return quickstart(args.dir, args.port, args.with_binary)


if __name__ == "__main__":
    sys.exit(main())
