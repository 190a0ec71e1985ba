"""Which program runs a template's playbook, by Semaphore's `app` name."""

import shutil

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


def build_command(spec: TaskSpec) -> list[str]:
    """The argv that runs the task, with the playbook (script) first then the arguments."""
    program = APP_PROGRAMS.get(spec.app)
    if program is None:
        raise UnsupportedApp(f"app {spec.app!r} is not supported by this runner "
                             f"(supported: {', '.join(supported_apps())})")
    if shutil.which(program) is None:
        raise UnsupportedApp(f"app {spec.app!r} needs {program!r}, which is not on this "
                             f"runner's PATH")
    if not spec.playbook:
        raise UnsupportedApp(f"app {spec.app!r} needs a playbook (the script to run)")
    return [program, spec.playbook, *spec.arguments]
