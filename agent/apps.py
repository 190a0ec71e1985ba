"""Which program runs a template's playbook, by Semaphore's `app` name, and with what argv."""

import json
import shutil
from pathlib import Path

from protocol.frames import TaskSpec


class UnsupportedApp(Exception):
    """The runner cannot run this app (unknown, or its program is not installed here)."""


# app -> (program, whether the playbook is its first argument)
APP_PROGRAMS: dict[str, str] = {
    "bash": "bash",
    "python": "python3",
    "powershell": "pwsh",
}


def supported_apps() -> list[str]:
    return sorted(APP_PROGRAMS)


def check_app(spec: TaskSpec) -> str:
    """The program that runs the task's app here, or UnsupportedApp saying why not."""
    program = APP_PROGRAMS.get(spec.app)
    if program is None:
        raise UnsupportedApp(f"app {spec.app!r} is not supported by this runner "
                             f"(supported: {', '.join(supported_apps())})")
    if shutil.which(program) is None:
        raise UnsupportedApp(f"app {spec.app!r} needs {program!r}, which is not on this "
                             f"runner's PATH")
    if not spec.playbook:
        raise UnsupportedApp(f"app {spec.app!r} needs a playbook (the script to run)")
    return program


def build_command(spec: TaskSpec, script: Path) -> list[str]:
    """As Semaphore runs a script: the script, the template's arguments, the extra vars as
    `name=value` words, then the task's own arguments. Every word reaches the script as data
    in its argv (no shell reads it); the script is an absolute path, so no word can be taken
    for an interpreter option."""
    words = [f"{name}={value if isinstance(value, str) else json.dumps(value)}"
             for name, value in spec.extra_vars.items() if name != "semaphore_vars"]
    return [check_app(spec), str(script), *spec.arguments, *words, *spec.task_arguments]
