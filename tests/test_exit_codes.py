"""Each side's errors share a base its command line catches (RunnerError, HubError), with
the exit code as data: the hub's configuration errors exit 2; the runner exits 1 for all of
its errors (existing tests and scripts rely on it)."""

import json
import subprocess
import sys

from agent.config import RunnerConfigError
from agent.connection import RunnerRefused
from agent.errors import RunnerError
from agent.isolation import IsolationError
from agent.keys import RunnerKeyError
from agent.registration import RegistrationError
from hub.config import ConfigError
from hub.errors import HubError
from hub.store import NotFound, StoreError
from tests.faults import ROOT, free_port


def semaphore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_each_side_has_one_base_and_the_rule_in_exit_code():
    runner = {RunnerConfigError: 1, RunnerKeyError: 1, IsolationError: 1,
              RegistrationError: 1, RunnerRefused: 1}
    hub = {ConfigError: 2, StoreError: 2, NotFound: 2}
    assert all(issubclass(error, RunnerError) for error in runner)
    assert all(issubclass(error, HubError) for error in hub)
    assert {error: error.exit_code for error in runner} == runner
    assert {error: error.exit_code for error in hub} == hub


def test_runner_errors_exit_1_with_one_line_on_stderr(tmp_path):
    missing = tmp_path / "missing.json"
    result = semaphore("runner", "register", "--config", str(missing))
    assert result.returncode == 1 and str(missing) in result.stderr, result.stderr
    # Nobody listens at the hub's address: registration fails while running.
    config = tmp_path / "config.runner.json"
    config.write_text(json.dumps({"web_host": f"http://127.0.0.1:{free_port()}",
                                  "runner": {"registration_token": "t",
                                             "token_file": str(tmp_path / "token"),
                                             "tmp_path": str(tmp_path / "work")}}))
    result = semaphore("runner", "register", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("semaphore runner register: ") and (
        "Traceback" not in result.stderr), result.stderr


def test_server_configuration_error_exits_2(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"prot": 3000}))
    result = semaphore("server", "--config", str(config))
    assert result.returncode == 2 and "`prot`" in result.stderr, result.stderr
