"""The hub's errors: one base, which its command line catches and turns into a message on
stderr and an exit code (`exit_code`).

Each error's message says what is wrong and what to do; the exit code says which kind it is:
2 when the command cannot run as configured or asked (fix the config, database or arguments,
then run it again), 1 when something failed while it ran. (The runner exits 1 for all of its
errors: agent/errors.py says why.)

* HubError (exit 1)
    * ConfigError (hub/config.py, exit 2): the config file, its values or the environment
    * StoreError (hub/store/base.py, exit 2): the database cannot be used, or refuses what
      was asked (a taken login); over HTTP, a 400 (NotFound: a 404)
"""

CONFIGURATION_EXIT = 2
RUNTIME_EXIT = 1


class HubError(Exception):
    """The hub cannot do what was asked; the message says why and what to do."""

    exit_code = RUNTIME_EXIT
