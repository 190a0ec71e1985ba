"""Database rows -> the JSON objects Semaphore's API returns (secrets never included)."""

import json
import time
from typing import Any

from hub.core.spec import stored_vaults
from hub.core.survey import stored_object, stored_survey
from hub.store.base import decode_tags
from protocol.numbers import UNIX_TIME_MAX

Row = dict[str, Any]


def user_json(row: Row) -> Row:
    return {"id": row["id"], "name": row["name"], "username": row["username"],
            "email": row["email"], "created": row["created"], "admin": bool(row["admin"]),
            "alert": bool(row["alert"]), "external": bool(row["external"])}


def project_json(row: Row) -> Row:
    return {"id": row["id"], "name": row["name"], "created": row["created"],
            "alert": bool(row["alert"]), "alert_chat": row["alert_chat"],
            "max_parallel_tasks": row["max_parallel_tasks"], "type": row["type"]}


def api_token_json(row: Row, token: str | None = None) -> Row:
    # Semaphore uses the token itself as the id; it is shown whole only when created.
    return {"id": token or row["id"], "created": row["created"],
            "expired": bool(row["expired"]), "user_id": row["user_id"]}


def access_key_json(row: Row) -> Row:
    return {"id": row["id"], "name": row["name"], "type": row["type"],
            "project_id": row["project_id"]}


def repository_json(row: Row) -> Row:
    return {key: row[key] for key in ("id", "name", "project_id", "git_url", "git_branch",
                                      "ssh_key_id")}


def inventory_json(row: Row) -> Row:
    return {key: row[key] for key in ("id", "name", "project_id", "inventory", "ssh_key_id",
                                      "become_key_id", "repository_id", "type")}


def environment_json(row: Row) -> Row:
    # The vault password is a secret: stored encrypted, shown empty (as Semaphore shows
    # secrets), whoever asks.
    return {"id": row["id"], "name": row["name"], "project_id": row["project_id"],
            "password": "", "json": row["json"], "env": row["env"], "secrets": []}


def template_json(row: Row) -> Row:
    out = {key: row[key] for key in (
        "id", "project_id", "name", "app", "playbook", "arguments", "description",
        "git_branch", "repository_id", "inventory_id", "environment_id", "type", "runner_tag",
        "timeout_sec", "view_id")}
    out["allow_override_args_in_task"] = bool(row["allow_override_args_in_task"])
    out["allow_override_branch_in_task"] = bool(row["allow_override_branch_in_task"])
    for key in ("allow_parallel_tasks", "suppress_success_alerts", "autorun"):
        out[key] = bool(row.get(key))
    out["start_version"] = row.get("start_version")
    out["build_template_id"] = row.get("build_template_id")
    out["survey_vars"] = stored_survey(row.get("survey_vars"))
    out["task_params"] = stored_object(row.get("task_params"))
    out["vaults"] = [{**vault, "template_id": row["id"]}
                     for vault in stored_vaults(row.get("vaults"))]
    return out


def view_json(row: Row) -> Row:
    return {key: row[key] for key in ("id", "project_id", "title", "position")}


def task_json(row: Row, waiting_reason: str = "") -> Row:
    out = {key: row[key] for key in (
        "id", "template_id", "project_id", "status", "playbook", "environment", "arguments",
        "git_branch", "message", "inventory_id", "user_id", "runner_id", "commit_hash",
        "commit_message", "created", "start", "end", "status_message", "exit_code")}
    out["params"] = json.loads(row["params"] or "{}")
    # Semaphore's task schedule_id: the schedule that started it (None: a user did).
    out["schedule_id"] = row.get("schedule_id")
    # Semaphore's task integration_id: the integration whose webhook started it.
    out["integration_id"] = row.get("integration_id")
    if waiting_reason:
        out["waiting_reason"] = waiting_reason
    return out


def runner_json(row: Row, online: bool, link: Any = None) -> Row:
    tags = decode_tags(row["tags"])
    out = {"id": row["id"], "project_id": row["project_id"], "name": row["name"],
           "active": bool(row["active"]), "tag": tags[0] if tags else "", "tags": tags,
           "webhook": row["webhook"], "max_parallel_tasks": row["max_parallel_tasks"],
           "public_key": row["public_key"], "touched": row["touched"],
           "platform": row["platform"], "version": row["version"], "online": online,
           "last_seen": row["touched"],
           # Its tasks run as its own user (its last hello said so): keep it project-bound.
           "shared_identity": bool(row["shared_identity"]),
           # Its part in a staged update (hub/core/rollout.py).
           "update": {"state": row["update_state"] or "none", "target": row["update_target"],
                      "error": row["update_error"]}}
    if link is not None:
        out["running_tasks"] = sorted(link.assigned)
        out["apps"] = link.apps if link.apps is not None else {}
        out["draining"] = link.draining
        out["metrics"] = {"cpu_percent": link.metrics.cpu_percent,
                          "memory_used": link.metrics.memory_used,
                          "memory_total": link.metrics.memory_total,
                          "disk_free": link.metrics.disk_free, "load1": link.metrics.load1}
        out["last_seen"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(link.last_seen))
    return out


class OutputLines:
    """Stored frames -> Semaphore's TaskOutput entries, one per line.

    A line can span frames (a long line, or a prompt sent before its end): its pieces are
    joined, and the entry takes the time its first piece arrived.

    A stored row that cannot be shown as it is (a time no date can show, written before the
    codec checked times, or data that is not text) must not break the whole output: its time
    becomes the one before it, its data is decoded as best it can be, and `repaired` counts
    it for the caller to log.
    """

    def __init__(self, task_id: int):
        self.task_id = task_id
        self._partial = ""
        self._partial_time = 0.0
        self._time = 0.0  # the last good time, given to a row whose own is not
        self.repaired = 0

    def feed(self, chunks: list[Row]) -> list[Row]:
        lines = []
        for chunk in chunks:
            data, when = self._usable(chunk)
            pieces = data.split("\n")
            for piece in pieces[:-1]:
                start = self._partial_time if self._partial else when
                lines.append(self._entry(self._partial + piece, start))
                self._partial = ""
            if pieces[-1]:
                if not self._partial:
                    self._partial_time = when
                self._partial += pieces[-1]
        return lines

    def finish(self) -> list[Row]:
        """The last line, if the output did not end with a newline."""
        if not self._partial:
            return []
        line, self._partial = self._entry(self._partial, self._partial_time), ""
        return [line]

    def _usable(self, chunk: Row) -> tuple[str, float]:
        data, when = stored_text(chunk["data"]), chunk["time"]
        # NaN fails both comparisons; bool is an int and harmless.
        good_time = isinstance(when, int | float) and 0 <= when <= UNIX_TIME_MAX
        if good_time:
            self._time = float(when)
        if not good_time or not isinstance(chunk["data"], str):
            self.repaired += 1
        return data, self._time

    def _entry(self, text: str, when: float) -> Row:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
        return {"task_id": self.task_id, "time": f"{stamp}.{int(when % 1 * 1e6):06d}Z",
                "output": text}


def stored_text(data: Any) -> str:
    """A stored output row's data as text, whatever the row holds."""
    if isinstance(data, str):
        return data
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return "" if data is None else str(data)
