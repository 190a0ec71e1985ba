"""The runner build's `semaphore` command (semaphore.spec freezes this), and `python -m agent`.

It carries only the runner's commands; the hub's (`server`, `user`, `quickstart`) answer that
they are not part of this build instead of failing on a missing import.
"""

import argparse
import sys

from agent.cli import add_runner_commands, run_runner_command
from protocol.version import PACKAGE_VERSION

HUB_COMMANDS = ("server", "user", "quickstart")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semaphore",
                                     description="Semaphore remote runner (runner build)")
    parser.add_argument("--version", action="version",
                        version=f"semaphore {PACKAGE_VERSION} (runner build)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in HUB_COMMANDS:
        hub_command = commands.add_parser(name, help="not part of the runner build")
        hub_command.add_argument("rest", nargs=argparse.REMAINDER)
    add_runner_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in HUB_COMMANDS:
        print(f"semaphore {args.command}: the hub is not part of the runner build; install "
              "the full package (pip install semaphore-runners) to run it", file=sys.stderr)
        return 2
    return run_runner_command(args)


if __name__ == "__main__":
    sys.exit(main())
