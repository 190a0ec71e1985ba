"""The rules of a runner session, as plain state machines: one for each side.

websockets' sans-I/O `protocol.py` is the model. A shell (the hub's `hub/gateway.py`, the
runner's `agent/connection.py`) feeds its session each message it receives and acts on what
comes back: a frame to hand on, or a verdict that ends the session (`ProtocolError`, returned
rather than raised: send an error frame and close with its code; `Silent`; `SessionRefused`).
A session never waits, reads a clock, sends or closes: the time is a number the shell passes
in (one monotonic clock per session), and `next_deadline()` says when to call back.

The hub's side (`HubSession`): the hello first, in a version this hub speaks, and only once;
at most `frame_rate` frames a second (bursts of `frame_burst`); no silence longer than
`silence_limit`, counted on protocol frames from the last one the hub handled; every assign
answered (accepted or rejected) within `accept_timeout`. The runner's side (`RunnerSession`):
the welcome first, within the handshake timeout, or the hub's refusal in its place. Per task,
on the hub (`judge_report`): a runner speaks only for the tasks assigned to it, and its output
comes in seq order (`classify_seq`).
"""

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from protocol.codec import CloseCode, ProtocolError, decode_hub_frame, decode_runner_frame
from protocol.frames import (
    Accepted,
    Confirmation,
    Error,
    Finished,
    Hello,
    HubFrame,
    Output,
    Rejected,
    RunnerFrame,
    Welcome,
)
from protocol.version import SUPPORTED_VERSIONS


class State(Enum):
    """Where a session stands; the same three steps on both sides."""

    OPENING = "opening"  # the hub waits for the hello, the runner for the welcome
    OPEN = "open"        # frames both ways
    CLOSED = "closed"    # refused, silent or closed by its shell: nothing more is handed on


@dataclass(frozen=True, slots=True)
class Silent:
    """No frame from the runner for `seconds`: it is offline. The hub ends the session
    without an error frame (there is no one to read it)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class SessionRefused:
    """The hub answered the hello with an error: it will not have this runner as it is (the
    runner stops instead of reconnecting)."""

    message: str


class HubSession:
    """The hub's side of one runner session: what a runner may send, and when.

    Invariants: while OPENING, the only frame handed on is one hello, which opens the session;
    once OPEN, every frame but a hello is handed on (a second hello is refused). A refusal,
    `expire` or `close` leaves the session CLOSED: it has no deadline, and `receive` must not
    be called again. `next_deadline()` is the hello deadline while OPENING, then
    `silence_limit` after the last frame handled (`handled`); a frame the hub is still acting
    on (its own backpressure) is not the runner's silence. Each assign (`assigned`) is due an
    answer `accept_timeout` after it went out; `overdue` names each one past due once, and
    one that is answered (an accepted or rejected frame received) is never named.
    """

    def __init__(self, now: float, *, hello_timeout: float, silence_limit: float,
                 accept_timeout: float, frame_rate: float, frame_burst: float) -> None:
        self.state = State.OPENING
        self.hello_timeout = hello_timeout
        self.silence_limit = silence_limit
        self.accept_timeout = accept_timeout
        self.frame_rate = frame_rate
        self.frame_burst = frame_burst
        self._deadline = now + hello_timeout
        self._tokens = frame_burst  # a token bucket: one token per frame
        self._stamp = now
        # Unanswered assigns: task id -> when the answer is due. Each is `now +
        # accept_timeout` on a clock that never goes back, so insertion order is due order.
        self._unanswered: dict[int, float] = {}

    # Frames from the runner.

    def receive(self, data: bytes | str, now: float) -> RunnerFrame | ProtocolError:
        """One message from the runner, received at `now`: the frame to act on, or the
        error that ends the session (send it as an error frame, then close with its code)."""
        if self.state is State.CLOSED:
            raise RuntimeError("receive on a closed session")
        if self.state is State.OPEN and not self._take_token(now):
            return self._refuse(ProtocolError(
                "rate_limited", f"more than {self.frame_rate:.0f} frames per second (bursts "
                f"of {self.frame_burst:.0f})", CloseCode.POLICY_VIOLATION))
        try:
            frame = decode_runner_frame(data)
        except ProtocolError as exc:
            return self._refuse(exc)
        if self.state is State.OPENING:
            if not isinstance(frame, Hello):
                return self._refuse(ProtocolError(
                    "hello_expected", f"the first frame must be hello, got "
                    f"{type(frame).__name__.lower()}", CloseCode.PROTOCOL_ERROR))
            if frame.protocol_version not in SUPPORTED_VERSIONS:
                return self._refuse(ProtocolError(
                    "unsupported_version", f"runner speaks protocol version "
                    f"{frame.protocol_version}, this hub speaks {sorted(SUPPORTED_VERSIONS)}",
                    CloseCode.PROTOCOL_ERROR))
            self.state = State.OPEN
        elif isinstance(frame, Hello):
            return self._refuse(ProtocolError("duplicate_hello", "hello was already received",
                                              CloseCode.PROTOCOL_ERROR))
        elif isinstance(frame, Accepted | Rejected):
            self._unanswered.pop(frame.task_id, None)
        self._deadline = now + self.silence_limit
        return frame

    def handled(self, now: float) -> None:
        """The shell has acted on the last frame (perhaps after waiting on the hub's own
        backpressure) and reads again: silence counts from `now`."""
        if self.state is State.OPEN:
            self._deadline = now + self.silence_limit

    def next_deadline(self) -> float | None:
        """When `expire` ends the session if no frame comes first; None once closed."""
        return None if self.state is State.CLOSED else self._deadline

    def expire(self) -> ProtocolError | Silent:
        """`next_deadline()` passed with no frame: no hello in time is refused; silence after
        it means the runner is offline. The session is closed either way."""
        if self.state is State.OPENING:
            return self._refuse(ProtocolError(
                "no_hello", f"no hello within {self.hello_timeout:g} s",
                CloseCode.POLICY_VIOLATION))
        self.close()
        return Silent(self.silence_limit)

    # Assigns to the runner.

    def assigned(self, task_id: int, now: float) -> None:
        """An assign went out at `now`: its answer is due `accept_timeout` later (the same
        task assigned again before it is answered keeps its first deadline)."""
        if self.state is not State.CLOSED:
            self._unanswered.setdefault(task_id, now + self.accept_timeout)

    def next_accept_deadline(self) -> float | None:
        """When the oldest unanswered assign is due (call `overdue` then); None if none is."""
        return next(iter(self._unanswered.values()), None)

    def overdue(self, now: float) -> list[int]:
        """The tasks whose assign is unanswered past its deadline, oldest first; each is
        named once (the hub takes it back), and what the runner says of it later is the
        hub's to judge."""
        due = []
        for task_id, deadline in self._unanswered.items():
            if deadline > now:
                break
            due.append(task_id)
        for task_id in due:
            del self._unanswered[task_id]
        return due

    def close(self) -> None:
        """The session is over, whatever ended it: nothing is due any more."""
        self.state = State.CLOSED
        self._unanswered.clear()

    def _take_token(self, now: float) -> bool:
        self._tokens = min(self.frame_burst, self._tokens + (now - self._stamp) * self.frame_rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _refuse(self, error: ProtocolError) -> ProtocolError:
        self.close()
        return error


class RunnerSession:
    """The runner's side of one session with the hub (one websocket connection).

    Invariants: while OPENING (the hello is sent), the only frame handed on is the welcome,
    which opens the session; an error in its place is the hub's refusal (`SessionRefused`),
    anything else, or a message that is no valid frame, ends the session. Once OPEN, every
    frame is handed on but a second welcome, which means nothing and is dropped. A refusal or
    `close` leaves the session CLOSED; `receive` must not be called again.
    `next_deadline()` is when the welcome is due; the session has none once it came.
    """

    def __init__(self, now: float, *, handshake_timeout: float) -> None:
        self.state = State.OPENING
        self._deadline = now + handshake_timeout

    def receive(self, data: bytes | str) -> HubFrame | ProtocolError | SessionRefused | None:
        """One message from the hub: the frame to act on, None for one to drop, or what ends
        the session (a `ProtocolError` to close with, or the hub's refusal)."""
        if self.state is State.CLOSED:
            raise RuntimeError("receive on a closed session")
        try:
            frame = decode_hub_frame(data)
        except ProtocolError as exc:
            self.close()
            return exc
        if self.state is State.OPEN:
            return None if isinstance(frame, Welcome) else frame
        if isinstance(frame, Welcome):
            self.state = State.OPEN
            return frame
        self.close()
        if isinstance(frame, Error):
            return SessionRefused(frame.message)
        return ProtocolError("unexpected_frame", f"expected welcome, got {type(frame).__name__}")

    def next_deadline(self) -> float | None:
        """When the welcome is due if it has not come (the session then fails); None after."""
        return self._deadline if self.state is State.OPENING else None

    def close(self) -> None:
        """The session is over, whatever ended it."""
        self.state = State.CLOSED


# Per task, on the hub.


class SeqVerdict(Enum):
    NEXT = "next"            # store it
    DUPLICATE = "duplicate"  # already stored: ack again, store nothing
    GAP = "gap"              # frames missing before it: a protocol violation


def classify_seq(stored_seq: int, seq: int) -> SeqVerdict:
    """Hub side: what to do with output `seq` when `stored_seq` is the last one stored."""
    if seq <= stored_seq:
        return SeqVerdict.DUPLICATE
    if seq == stored_seq + 1:
        return SeqVerdict.NEXT
    return SeqVerdict.GAP


TaskReport = Accepted | Rejected | Output | Finished | Confirmation


class Assignment(Protocol):
    """What the hub holds of a task that has not ended (hub.lifecycle's ActiveTask)."""

    @property
    def runner_id(self) -> int | None: ...  # the runner it is assigned to (None: waiting)
    @property
    def received_seq(self) -> int: ...  # the last output seq taken from that runner


class ReportVerdict(Enum):
    APPLY = "apply"          # the runner's own task, in seq order: apply it
    DUPLICATE = "duplicate"  # output received already: ack what is stored, apply nothing
    NOT_YOURS = "not_yours"  # about a task not assigned to this runner: refused, not applied
    GONE = "gone"            # how a task the hub has ended (or never had) ended: not applied


def judge_report(frame: TaskReport, runner_id: int,
                 task: Assignment | None) -> ReportVerdict | ProtocolError:
    """Hub side: whether runner `runner_id` may report `frame` about `task` (None: the hub
    holds no such task), or the error that ends its session (a seq it skipped).

    A finished frame that is `GONE` or `NOT_YOURS` is still acked, so that the runner forgets
    the task instead of holding and resending it forever.
    """
    if task is None and isinstance(frame, Finished):
        return ReportVerdict.GONE
    if task is None or task.runner_id != runner_id:
        return ReportVerdict.NOT_YOURS
    if isinstance(frame, Output):
        seq = classify_seq(task.received_seq, frame.seq)
        if seq is SeqVerdict.DUPLICATE:
            return ReportVerdict.DUPLICATE
        if seq is SeqVerdict.GAP:
            return ProtocolError("seq_gap", f"task {frame.task_id}: output seq {frame.seq} "
                                 f"after {task.received_seq}", CloseCode.PROTOCOL_ERROR)
    if isinstance(frame, Finished) and frame.last_seq > task.received_seq:
        return ProtocolError("seq_gap", f"task {frame.task_id} finished at seq "
                             f"{frame.last_seq} but output stopped at {task.received_seq}",
                             CloseCode.PROTOCOL_ERROR)
    return ReportVerdict.APPLY
