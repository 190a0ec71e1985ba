"""The hub: REST API, dashboard, runner gateway and the task core, over one store."""
