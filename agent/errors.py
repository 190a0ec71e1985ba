"""The runner's errors: one base, which its command line catches, and one exit-code rule.

Each error's message says what is wrong and what to do; `exit_code` says which kind it is,
as the hub's do (hub/errors.py): 2 when the runner cannot start as configured (fix the
config, key or folders, then start again), 1 when something failed while it ran.

* RunnerError (exit 1)
    * RegistrationError (agent/registration.py): the hub did not register the runner
    * RunnerRefused (agent/connection.py): the hub will not take the runner as it is
    * RunnerConfigError (agent/config.py, exit 2): the config file or its values
    * RunnerKeyError (agent/keys.py, exit 2): the private key
    * IsolationError (agent/isolation.py, exit 2): the task users or the runner's folders
"""

CONFIGURATION_EXIT = 2
RUNTIME_EXIT = 1


class RunnerError(Exception):
    """The runner cannot go on; the message says why and what to do."""

    exit_code = RUNTIME_EXIT
