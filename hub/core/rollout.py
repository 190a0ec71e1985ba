"""Staged runner updates: a target version for all runners, a project's or one runner, sent
first to `canary` runners, then, once those have been back as the new version and online for
`healthy_seconds`, to the rest. One rollout is live at a time (a new one replaces it).

A runner told to update (an `Update` frame) drains, swaps its binary and re-executes; the hub
marks it `updated` when it reconnects as the target. It fails, and the rollout stops, when
the runner reports it could not (`UpdateProgress` failed: bad signature, not a single-file
runner...), comes back as another version (its watchdog restored the old build), is not back
within the deadline, or drops off before it was healthy. Nothing already sent is undone: the
runners that updated stay updated; the ones not yet told are not told.

State per runner lives in the runner table (`update_state`, `update_target`, `update_error`,
`update_wave`) so GET /api/runners shows it; the timers live here, and a restarted hub
starts them again for the runners it finds `updating`.
"""

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import structlog

from hub.config import HubConfig
from hub.core.dispatcher import Dispatcher
from hub.core.links import RunnerLink
from hub.runner_binaries import BinaryError, find_binary
from hub.store import Row, Store
from protocol.elf import MACHINES
from protocol.frames import Update, UpdateProgress

log = structlog.get_logger("hub.rollout")

TICK = 0.5  # seconds between checks when nothing wakes the loop


@dataclass
class _Told:
    """A runner sent an `Update`, as the hub follows it."""

    sent_at: float
    restarting_at: float | None = None
    healthy_from: float | None = None  # back as the target since (its session's start)


def runner_arch(platform: str) -> str:
    """"linux/x86_64" (a hello's platform) -> "amd64"."""
    machine = platform.partition("/")[2].lower()
    return MACHINES.get(machine, machine or "amd64")


class Rollouts:
    def __init__(self, store: Store, dispatcher: Dispatcher, config: HubConfig):
        self.store = store
        self.dispatcher = dispatcher
        self.config = config
        self._told: dict[int, _Told] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    # What admins do (hub/api/runners.py).

    async def begin(self, version: str, project_id: int | None, runner_id: int | None,
                    canary: int, healthy_seconds: float) -> Row:
        live = await self.store.live_rollout()
        rollout = await self.store.create_rollout({
            "version": version, "project_id": project_id, "runner_id": runner_id,
            "canary": canary, "healthy_seconds": healthy_seconds})
        if live is not None:
            await self._end(live, "stopped", f"replaced by rollout {rollout['id']}")
        for row in await self._in_scope(rollout):
            if row["update_state"] == "updating":
                continue  # told already (by the rollout replaced): followed as it is
            done = row["version"] == version
            await self.store.update_runner(row["id"], {
                "update_state": "updated" if done else "pending", "update_target": version,
                "update_error": "", "update_wave": 0})
        log.info("rollout.started", rollout_id=rollout["id"], version=version,
                 project_id=project_id, runner_id=runner_id, canary=canary,
                 healthy_seconds=healthy_seconds)
        self.wake()
        return rollout

    async def cancel(self) -> Row | None:
        live = await self.store.live_rollout()
        if live is not None:
            await self._end(live, "stopped", "stopped by an admin")
        return live

    # What runners do (hub/gateway.py).

    def connected(self, link: RunnerLink) -> None:
        self.wake()

    async def progress(self, link: RunnerLink, frame: UpdateProgress) -> None:
        log.info("runner.update.progress", runner_id=link.runner_id, version=frame.version,
                 state=frame.state, reason=frame.reason)
        told = self._told.get(link.runner_id)
        if frame.state == "restarting" and told is not None:
            told.restarting_at = time.monotonic()
        elif frame.state == "failed":
            await self._fail(link.runner_id, link.name, frame.reason)

    # The loop.

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._step()
            except Exception:
                log.exception("rollout.step.failed")

    async def _step(self) -> None:
        rollout = await self.store.live_rollout()
        if rollout is None:
            return
        runners = await self._in_scope(rollout)
        target = rollout["version"]
        for row in runners:
            if row["update_state"] == "updating" and await self._follow(row, target):
                return  # failed: the rollout is over
            if row["update_state"] == "updated" and not await self._still_healthy(row, rollout):
                return
        runners = await self._in_scope(rollout)
        states = [row["update_state"] for row in runners]
        if all(state == "updated" for state in states) and all(
                self._healthy(row, rollout) for row in runners if row["update_wave"]):
            await self._end(rollout, "done")
            return
        canaries = [row for row in runners if row["update_wave"] == 1]
        pending = [row for row in runners if row["update_state"] == "pending"
                   and self.dispatcher.link(row["id"]) is not None]
        if not canaries and rollout["canary"] > 0:
            for row in pending[:rollout["canary"]]:
                await self._tell(row, target, wave=1)
            return
        if all(self._healthy(row, rollout) for row in canaries):
            for row in pending:
                await self._tell(row, target, wave=2)

    def _healthy(self, row: Row, rollout: Row) -> bool:
        told = self._told.get(row["id"])
        if row["update_state"] != "updated":
            return False
        if told is None or told.healthy_from is None:
            return True  # was the target already, or updated before a hub restart
        return time.monotonic() - told.healthy_from >= rollout["healthy_seconds"]

    async def _follow(self, row: Row, target: str) -> bool:
        """An `updating` runner: back as the target, back as another version, or late.
        True if it failed."""
        # Told before this hub started: followed from now (its restart deadline is unknown).
        told = self._told.setdefault(row["id"], _Told(time.monotonic()))
        link = self.dispatcher.link(row["id"])
        now = time.monotonic()
        if link is not None and link.version == target and link.connected_mono > told.sent_at:
            told.healthy_from = link.connected_mono
            await self.store.update_runner(row["id"], {"update_state": "updated",
                                                       "update_error": ""})
            log.info("runner.update.done", runner_id=row["id"], version=target)
            return False
        if (link is not None and link.connected_mono > told.sent_at
                and (told.restarting_at is not None or link.update_error)):
            why = link.update_error or (f"came back running version {link.version}, not "
                                        f"{target}")
            await self._fail(row["id"], row["name"], why)
            return True
        deadline = self.config.runner_update_deadline_sec * 2 + 10
        if told.restarting_at is not None and now > told.restarting_at + deadline:
            await self._fail(row["id"], row["name"], f"did not reconnect as version {target} "
                                                     f"within {deadline:.0f} s of restarting")
            return True
        return False

    async def _still_healthy(self, row: Row, rollout: Row) -> bool:
        """An updated runner must stay connected, in the session it came back in, until it
        has been healthy for healthy_seconds; else it fails (the new build drops off)."""
        told = self._told.get(row["id"])
        if told is None or told.healthy_from is None or self._healthy(row, rollout):
            return True
        link = self.dispatcher.link(row["id"])
        if link is not None and link.connected_mono == told.healthy_from:
            return True
        gone = time.monotonic() - told.healthy_from
        await self._fail(row["id"], row["name"], f"disconnected {gone:.0f} s after updating, "
                         f"before it was healthy for {rollout['healthy_seconds']:g} s")
        return False

    async def _tell(self, row: Row, target: str, wave: int) -> None:
        link = self.dispatcher.link(row["id"])
        if link is None:
            return
        arch = runner_arch(link.platform)
        try:
            build = find_binary(self.config.runner_binaries_path, target, arch)
        except BinaryError as exc:
            await self._fail(row["id"], row["name"], str(exc))
            return
        await self.store.update_runner(row["id"], {"update_state": "updating",
                                                   "update_wave": wave, "update_error": ""})
        self._told[row["id"]] = _Told(time.monotonic())
        query = urlencode({"arch": arch, "version": target})
        link.send(Update(version=target, path=f"/api/runner/binary?{query}",
                         sha256=build.sha256, signature=build.signature, size=build.size,
                         arch=arch, deadline_sec=self.config.runner_update_deadline_sec))
        log.info("runner.update.sent", runner_id=row["id"], version=target, wave=wave)

    async def _fail(self, runner_id: int, name: str, why: str) -> None:
        await self.store.update_runner(runner_id, {"update_state": "failed",
                                                   "update_error": why[:1000]})
        self._told.pop(runner_id, None)
        log.warning("runner.update.failed", runner_id=runner_id, reason=why)
        live = await self.store.live_rollout()
        if live is not None and any(row["id"] == runner_id
                                    for row in await self._in_scope(live)):
            await self._end(live, "failed", f"runner {name} ({runner_id}): {why}")

    async def _end(self, rollout: Row, state: str, error: str = "") -> None:
        await self.store.end_rollout(rollout["id"], state, error)
        # Runners not yet told are not told: back to no update.
        for row in await self._in_scope(rollout):
            if row["update_state"] == "pending":
                await self.store.update_runner(row["id"], {"update_state": ""})
        log.info("rollout.ended", rollout_id=rollout["id"], state=state, error=error)

    async def _in_scope(self, rollout: Row) -> list[Row]:
        rows = await self.store.list_all_runners()
        if rollout["runner_id"] is not None:
            return [row for row in rows if row["id"] == rollout["runner_id"]]
        if rollout["project_id"] is not None:
            return [row for row in rows if row["project_id"] == rollout["project_id"]]
        return rows
