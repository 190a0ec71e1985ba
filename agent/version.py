"""The runner's own version, reported in hello and by `semaphore --version`."""

RUNNER_VERSION = "0.1.0"
