"""The runner's errors: one base, which its command line catches and turns into a message on
stderr and an exit code (`exit_code`).

Each error's message says what is wrong and what to do. The runner exits 1 for every one of
them, configuration errors included: unlike the hub (hub/errors.py), which exits 2 when it
cannot run as configured. That difference is kept on purpose for now: scripts and tests
(tests/test_task_isolation.py, tests/test_cli_e2e.py, the frozen runner's) rely on the 1.

* RunnerError (exit 1)
    * RunnerConfigError (agent/config.py): the config file or its values
    * RunnerKeyError (agent/keys.py): the private key
    * IsolationError (agent/isolation.py): the task users or the runner's folders
    * RegistrationError (agent/registration.py): the hub did not register the runner
    * RunnerRefused (agent/connection.py): the hub will not take the runner as it is
"""


class RunnerError(Exception):
    """The runner cannot go on; the message says why and what to do."""

    exit_code = 1
