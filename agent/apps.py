"""Which program runs a template's playbook, by Semaphore's `app` name, and with what argv."""

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

from agent.ansible import ansible_command
from agent.config import AppSetting
from protocol.frames import TaskSpec


class UnsupportedApp(Exception):
    """The runner cannot run this app (unknown, or its program is not installed here)."""


# app -> the program that runs it
APP_PROGRAMS: dict[str, str] = {
    "ansible": "ansible-playbook",
    "bash": "bash",
    "python": "python3",
    "powershell": "pwsh",
    "terraform": "terraform",
    "tofu": "tofu",
}
# Apps whose `playbook` is a folder of the repository (empty: its root), not a script.
FOLDER_APPS = frozenset({"terraform", "tofu"})


# Semaphore's `apps` setting, from the runner's config: another program (a path or a name on
# PATH) and its own arguments per app, e.g. {"python": {"app_path": "/usr/bin/python3.12"}}.
_settings: dict[str, AppSetting] = {}


def configure_apps(settings: dict[str, AppSetting]) -> None:
    """Use the config's `apps` for the rest of this process (the runner's start)."""
    _settings.clear()
    _settings.update(settings)
    _found.clear()
    available_apps.cache_clear()


def supported_apps() -> list[str]:
    return sorted(APP_PROGRAMS)


def _wanted(app: str) -> str:
    """The program the config names for `app`, else the usual one."""
    setting = _settings.get(app)
    return setting.app_path if setting is not None and setting.app_path else APP_PROGRAMS[app]


# (program, PATH) -> where it was found. A search stats every folder of PATH, and a task
# asks three times (accept, run, argv): 1 ms of a busy runner's CPU per task. The apps a
# runner offers are found once per process anyway (available_apps); a program found before
# is checked again at each use, so one removed since is still reported as missing.
_found: dict[tuple[str, str], str] = {}


def program_of(app: str) -> str | None:
    """Where the program that runs `app` is, or None if it is not there."""
    wanted = _wanted(app)
    key = (wanted, os.environ.get("PATH", os.defpath))
    path = _found.get(key)
    if path is not None and os.access(path, os.X_OK) and not os.path.isdir(path):
        return path
    path = shutil.which(wanted)
    if path is None:
        _found.pop(key, None)
    else:
        _found[key] = path
    return path


@functools.cache
def available_apps() -> dict[str, str]:
    """The apps this runner can run (their program is found), each with the first line its
    program prints for `--version`; found once per process, said in every hello."""
    found = {}
    for app in APP_PROGRAMS:
        path = program_of(app)
        if path is not None:
            found[app] = _version(path)
    return found


def _version(path: str) -> str:
    try:
        # No update check over the network (terraform, tofu): a runner may have none.
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0][:200] if lines else ""


def check_app(spec: TaskSpec) -> str:
    """The program that runs the task's app here, or UnsupportedApp saying why not."""
    if spec.app not in APP_PROGRAMS:
        raise UnsupportedApp(f"app {spec.app!r} is not supported by this runner "
                             f"(supported: {', '.join(supported_apps())})")
    program = _wanted(spec.app)
    if program_of(spec.app) is None:
        raise UnsupportedApp(f"app {spec.app!r} needs {program!r}, which is not on this "
                             f"runner's PATH (or not executable)")
    if not spec.playbook and spec.app not in FOLDER_APPS:
        raise UnsupportedApp(f"app {spec.app!r} needs a playbook (the script to run)")
    return program


def build_command(spec: TaskSpec, script: Path, task_id: int = 0,
                  inventory: Path | None = None,
                  extra_vars_file: Path | None = None,
                  secret_vars: dict[str, str] | None = None) -> list[str]:
    """The task's argv. Every word reaches the program as data in its argv (no shell reads
    it); the script is an absolute path, so no word can be taken for an option. With
    extra_vars_file (ansible, when secret vars are among them), `--extra-vars @file`.
    A script's secret vars (a survey's secret answers) follow its extra vars as words, as
    Semaphore merges them in; its output masks them."""
    if spec.app == "ansible":
        return ansible_command(check_app(spec), spec, script, task_id, inventory,
                               extra_vars_file)
    # As Semaphore runs a script: the script, the template's arguments, the extra vars as
    # `name=value` words, then the task's own arguments.
    merged = {**spec.extra_vars, **(secret_vars or {})}
    words = [f"{name}={value if isinstance(value, str) else json.dumps(value)}"
             for name, value in merged.items() if name != "semaphore_vars"]
    return [check_app(spec), *app_args(spec.app), str(script), *spec.arguments, *words,
            *spec.task_arguments]


def app_args(app: str) -> list[str]:
    """The config's own arguments for the app's program (`apps.<app>.app_args`), first."""
    setting = _settings.get(app)
    return setting.app_args if setting is not None and setting.app_args is not None else []
