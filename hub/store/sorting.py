"""The columns a list may be sorted by (Semaphore's `sort` query parameter), per table.

A whitelist of SQL expressions: the key a client sends never reaches the SQL itself. A
reference (a repository's key, a template's inventory) sorts by the name of the row it points
to, as Semaphore's lists do.
"""

SORT_KEYS: dict[str, dict[str, str]] = {
    "access_key": {"name": "name", "type": "type"},
    "repository": {
        "name": "name",
        "git_url": "git_url",
        "ssh_key": "(SELECT k.name FROM access_key k WHERE k.id = repository.ssh_key_id)",
    },
    "inventory": {"name": "name", "type": "type"},
    "environment": {"name": "name"},
    "template": {
        "name": "name",
        "playbook": "playbook",
        "inventory": "(SELECT i.name FROM inventory i WHERE i.id = template.inventory_id)",
        "environment":
            "(SELECT e.name FROM environment e WHERE e.id = template.environment_id)",
        "repository": "(SELECT r.name FROM repository r WHERE r.id = template.repository_id)",
    },
    "project_view": {"position": "position", "title": "title"},
    "integration": {"name": "name"},
    "task": {"id": "id", "created": "created", "start": "start", "end": "end",
             "status": "status", "template": "template_id"},
}


def order_by(table: str, sort: str, descending: bool) -> str:
    """The ORDER BY clause for a whitelisted sort key ("" for the row id); ties keep id order,
    so pages of equal names come out the same every time."""
    direction = "DESC" if descending else "ASC"
    if not sort:
        return f"ORDER BY id {direction}"
    return f"ORDER BY {SORT_KEYS[table][sort]} {direction}, id {direction}"
