"""The hub's errors: one base, which its command line catches, and one exit-code rule.

Each error's message says what is wrong and what to do; `exit_code` says which kind it is,
as the runner's do (agent/errors.py): 2 when the command cannot run as configured or asked
(fix the config, database or arguments, then run it again), 1 when something failed while
it ran.

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
