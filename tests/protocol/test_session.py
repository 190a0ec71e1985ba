"""The session rules, both sides back to back: bytes from one session's peer into the other,
the time as a number, no socket and no event loop."""

from dataclasses import dataclass

import pytest

from protocol.codec import ProtocolError, encode
from protocol.frames import (
    Accepted,
    Ack,
    Assign,
    Cancel,
    Error,
    Finished,
    Heartbeat,
    Hello,
    Output,
    Rejected,
    TaskSpec,
    Welcome,
)
from protocol.session import (
    HubSession,
    ReportVerdict,
    RunnerSession,
    SeqVerdict,
    SessionRefused,
    Silent,
    State,
    classify_seq,
    judge_report,
)
from protocol.version import PROTOCOL_VERSION

HELLO = Hello(protocol_version=PROTOCOL_VERSION, runner_version="test", name="r")
WELCOME = Welcome(protocol_version=PROTOCOL_VERSION, session_id="s", runner_id=7,
                  heartbeat_interval=5.0, max_frame_bytes=1 << 20, max_output_bytes=1 << 20)
SPEC = TaskSpec(project_id=1, template_id=1, app="bash", playbook="x.sh")


def hub_session(now: float = 0.0, **limits: float) -> HubSession:
    values = {"hello_timeout": 10.0, "silence_limit": 15.0, "accept_timeout": 20.0,
              "frame_rate": 100.0, "frame_burst": 5.0, **limits}
    return HubSession(now, **values)


def connected(now: float = 0.0, **limits: float) -> tuple[HubSession, RunnerSession]:
    """A hub session and a runner session through hello and welcome, at `now`."""
    hub, runner = hub_session(now, **limits), RunnerSession(now, handshake_timeout=10.0)
    assert hub.receive(encode(HELLO), now) == HELLO
    assert runner.receive(encode(WELCOME)) == WELCOME
    assert hub.state is runner.state is State.OPEN
    return hub, runner


def refused(verdict: object, code: str, close_code: int) -> bool:
    return (isinstance(verdict, ProtocolError) and verdict.code == code
            and verdict.close_code == close_code)


# Hello and welcome.


def test_hello_and_welcome_open_both_sides_then_frames_flow_both_ways():
    hub, runner = connected()
    assert runner.next_deadline() is None
    for frame in (Assign(task_id=3, spec=SPEC), Ack(task_id=3, seq=2), Cancel(task_id=3),
                  Error(code="not_your_task", message="no")):
        assert runner.receive(encode(frame)) == frame
    for now, frame in enumerate((Accepted(task_id=3), Heartbeat(time=1.0),
                                 Output(task_id=3, seq=1, stream="stdout", data="x", time=1.0),
                                 Finished(task_id=3, status="success", last_seq=1),
                                 Error(code="x", message="y")), start=1):
        assert hub.receive(encode(frame), float(now)) == frame
    assert hub.state is runner.state is State.OPEN


@pytest.mark.parametrize("first", [Heartbeat(time=1.0), Accepted(task_id=1),
                                   Error(code="x", message="y")])
def test_anything_but_hello_first_is_refused(first):
    hub = hub_session()
    verdict = hub.receive(encode(first), 1.0)
    assert refused(verdict, "hello_expected", 1002)
    assert type(first).__name__.lower() in verdict.message
    assert hub.state is State.CLOSED and hub.next_deadline() is None


def test_a_version_the_hub_does_not_speak_is_refused_naming_both():
    hub = hub_session()
    verdict = hub.receive(encode(Hello(protocol_version=99, runner_version="future")), 1.0)
    assert refused(verdict, "unsupported_version", 1002)
    assert "99" in verdict.message and str(PROTOCOL_VERSION) in verdict.message


def test_a_second_hello_is_refused():
    hub, _ = connected()
    assert refused(hub.receive(encode(HELLO), 1.0), "duplicate_hello", 1002)
    assert hub.state is State.CLOSED


@pytest.mark.parametrize(("payload", "code", "close_code"), [
    (b"not json", "malformed_frame", 1007),
    (b'{"type": "teleport"}', "unknown_type", 1002),
    (b'{"type": "welcome", "protocol_version": 1}', "unknown_type", 1002),
    (b'{"type": "heartbeat", "time": 1}' + b" " * (1 << 20), "frame_too_big", 1009),
])
@pytest.mark.parametrize("opened", [False, True])
def test_a_message_that_is_no_runner_frame_ends_the_session(payload, code, close_code, opened):
    hub = connected()[0] if opened else hub_session()
    assert refused(hub.receive(payload, 1.0), code, close_code)
    assert hub.state is State.CLOSED


def test_the_hubs_error_in_place_of_the_welcome_is_a_refusal():
    runner = RunnerSession(0.0, handshake_timeout=10.0)
    verdict = runner.receive(encode(Error(code="runner_revoked", message="disabled")))
    assert verdict == SessionRefused("disabled")
    assert runner.state is State.CLOSED


@pytest.mark.parametrize("first", [Assign(task_id=1, spec=SPEC), Ack(task_id=1, seq=0)])
def test_the_runner_wants_the_welcome_first(first):
    runner = RunnerSession(0.0, handshake_timeout=10.0)
    verdict = runner.receive(encode(first))
    assert isinstance(verdict, ProtocolError) and verdict.code == "unexpected_frame"
    assert runner.state is State.CLOSED


@pytest.mark.parametrize("opened", [False, True])
def test_a_message_that_is_no_hub_frame_ends_the_runners_session(opened):
    runner = connected()[1] if opened else RunnerSession(0.0, handshake_timeout=10.0)
    verdict = runner.receive(encode(HELLO))  # a runner's frame: unknown to a runner
    assert refused(verdict, "unknown_type", 1002)
    assert runner.state is State.CLOSED


def test_a_second_welcome_is_dropped():
    _, runner = connected()
    assert runner.receive(encode(WELCOME)) is None
    assert runner.state is State.OPEN


def test_the_welcome_is_due_within_the_handshake_timeout():
    runner = RunnerSession(100.0, handshake_timeout=10.0)
    assert runner.next_deadline() == 110.0
    runner.receive(encode(WELCOME))
    assert runner.next_deadline() is None


def test_a_closed_session_takes_nothing_more():
    hub, runner = connected()
    hub.close()
    runner.close()
    assert hub.next_deadline() is None and runner.next_deadline() is None
    with pytest.raises(RuntimeError):
        hub.receive(encode(Heartbeat(time=1.0)), 1.0)
    with pytest.raises(RuntimeError):
        runner.receive(encode(Ack(task_id=1, seq=1)))


# Deadlines, on protocol frames.


def test_no_hello_by_the_deadline_is_refused():
    hub = hub_session(100.0, hello_timeout=2.5)
    hub.handled(101.0)  # reading again does not move the hello deadline
    assert hub.next_deadline() == 102.5
    verdict = hub.expire()
    assert refused(verdict, "no_hello", 1008) and "2.5 s" in verdict.message
    assert hub.state is State.CLOSED and hub.next_deadline() is None


def test_silence_counts_from_the_last_frame_the_hub_handled():
    hub, _ = connected(0.0, silence_limit=15.0)
    assert hub.next_deadline() == 15.0
    hub.receive(encode(Heartbeat(time=1.0)), 10.0)
    assert hub.next_deadline() == 25.0
    hub.handled(18.0)  # the hub's own backpressure held the frame: not the runner's silence
    assert hub.next_deadline() == 33.0
    assert hub.expire() == Silent(15.0)
    assert hub.state is State.CLOSED and hub.next_deadline() is None


def test_frames_past_the_rate_end_the_session():
    hub, _ = connected(0.0, frame_rate=100.0, frame_burst=5.0)
    beat = encode(Heartbeat(time=1.0))
    assert all(hub.receive(beat, 1.0) == Heartbeat(time=1.0) for _ in range(5))  # the burst
    assert refused(hub.receive(beat, 1.0), "rate_limited", 1008)

    hub, _ = connected(0.0, frame_rate=100.0, frame_burst=5.0)
    for step in range(1000):  # at the rate, never refused
        assert hub.receive(beat, 1.0 + step / 100) == Heartbeat(time=1.0)


def test_the_frame_rate_refills_with_time():
    beat = encode(Heartbeat(time=1.0))
    for late in (False, True):
        hub, _ = connected(1000.0, frame_rate=10.0, frame_burst=5.0)
        assert [hub.receive(beat, 1000.0) for _ in range(5)] == [Heartbeat(time=1.0)] * 5
        if not late:
            assert refused(hub.receive(beat, 1000.0), "rate_limited", 1008)
            continue
        # A quarter of a second at 10 a second: two and a half frames more.
        assert [hub.receive(beat, 1000.25) for _ in range(2)] == [Heartbeat(time=1.0)] * 2
        assert refused(hub.receive(beat, 1000.25), "rate_limited", 1008)


def test_the_hello_is_not_counted_against_the_rate():
    hub = hub_session(frame_burst=1.0)
    assert hub.receive(encode(HELLO), 0.0) == HELLO
    assert hub.receive(encode(Heartbeat(time=1.0)), 0.0) == Heartbeat(time=1.0)
    assert refused(hub.receive(encode(Heartbeat(time=1.0)), 0.0), "rate_limited", 1008)


# Assigns are answered in time.


def test_an_unanswered_assign_is_overdue_once_then_forgotten():
    hub, _ = connected(0.0, accept_timeout=20.0)
    assert hub.next_accept_deadline() is None
    hub.assigned(1, 1.0)
    hub.assigned(2, 2.0)
    hub.assigned(1, 5.0)  # assigned again before an answer: the first deadline holds
    assert hub.next_accept_deadline() == 21.0
    assert hub.overdue(20.9) == []
    assert hub.overdue(21.5) == [1]
    assert hub.next_accept_deadline() == 22.0
    assert hub.overdue(30.0) == [2]
    assert hub.overdue(99.0) == [] and hub.next_accept_deadline() is None


@pytest.mark.parametrize("answer", [Accepted(task_id=1), Rejected(task_id=1, reason="busy")])
def test_an_answer_ends_the_deadline_of_its_assign(answer):
    hub, _ = connected(0.0, accept_timeout=20.0)
    hub.assigned(1, 1.0)
    hub.assigned(2, 2.0)
    assert hub.receive(encode(answer), 3.0) == answer
    assert hub.next_accept_deadline() == 22.0
    assert hub.overdue(50.0) == [2]


def test_a_closed_session_has_no_assign_due():
    hub, _ = connected()
    hub.assigned(1, 1.0)
    hub.close()
    hub.assigned(2, 2.0)
    assert hub.next_accept_deadline() is None and hub.overdue(99.0) == []


def test_a_whole_session_back_to_back():
    """Hello, welcome, an assign answered, one left unanswered, output, finished, silence."""
    hub = hub_session(0.0, silence_limit=15.0, accept_timeout=20.0)
    runner = RunnerSession(0.0, handshake_timeout=10.0)
    to_runner: list[bytes] = []

    def hub_sends(frame, now: float) -> None:
        if isinstance(frame, Assign):
            hub.assigned(frame.task_id, now)
        to_runner.append(encode(frame))

    assert hub.receive(encode(HELLO), 1.0) == HELLO
    hub.handled(1.5)
    hub_sends(WELCOME, 1.5)
    hub_sends(Assign(task_id=4, spec=SPEC), 2.0)
    hub_sends(Assign(task_id=5, spec=SPEC), 2.0)
    received = [runner.receive(data) for data in to_runner]
    assert received == [WELCOME, Assign(task_id=4, spec=SPEC), Assign(task_id=5, spec=SPEC)]
    for now, frame in ((3.0, Accepted(task_id=4)),
                       (4.0, Output(task_id=4, seq=1, stream="stdout", data="hi\n", time=3.5)),
                       (5.0, Finished(task_id=4, status="success", last_seq=1))):
        assert hub.receive(encode(frame), now) == frame
        hub.handled(now)
    assert hub.next_accept_deadline() == 22.0
    assert hub.next_deadline() == 20.0  # silence first: the runner went quiet at 5.0
    assert hub.expire() == Silent(15.0)
    assert hub.overdue(22.0) == []  # over with the session: detaching settles task 5


# Per task: a runner speaks for its own tasks, output in seq order.


@pytest.mark.parametrize(("stored", "seq", "verdict"), [
    (0, 1, SeqVerdict.NEXT),
    (0, 0, SeqVerdict.DUPLICATE),
    (0, 2, SeqVerdict.GAP),
    (5, 6, SeqVerdict.NEXT),
    (5, 5, SeqVerdict.DUPLICATE),
    (5, 1, SeqVerdict.DUPLICATE),
    (5, 7, SeqVerdict.GAP),
    (5, 1000, SeqVerdict.GAP),
    (999, 1000, SeqVerdict.NEXT),
])
def test_classify_seq(stored, seq, verdict):
    assert classify_seq(stored, seq) is verdict


@dataclass
class Held:
    """What the hub holds of a task (hub.lifecycle's ActiveTask, as far as the rules look)."""

    runner_id: int | None
    received_seq: int = 0


def output(seq: int, task_id: int = 4) -> Output:
    return Output(task_id=task_id, seq=seq, stream="stdout", data="x", time=1.0)


@pytest.mark.parametrize(("frame", "task", "verdict"), [
    # Its own task, in order.
    (Accepted(task_id=4), Held(7), ReportVerdict.APPLY),
    (Rejected(task_id=4, reason="busy"), Held(7), ReportVerdict.APPLY),
    (output(3), Held(7, received_seq=2), ReportVerdict.APPLY),
    (output(2), Held(7, received_seq=2), ReportVerdict.DUPLICATE),
    (output(1), Held(7, received_seq=2), ReportVerdict.DUPLICATE),
    (Finished(task_id=4, status="success", last_seq=2), Held(7, received_seq=2),
     ReportVerdict.APPLY),
    (Finished(task_id=4, status="error", last_seq=0), Held(7, received_seq=2),
     ReportVerdict.APPLY),
    # Another runner's task, or one waiting for a runner.
    (Accepted(task_id=4), Held(8), ReportVerdict.NOT_YOURS),
    (output(1), Held(8), ReportVerdict.NOT_YOURS),
    (output(1), Held(None), ReportVerdict.NOT_YOURS),
    (output(9), Held(8), ReportVerdict.NOT_YOURS),  # not a gap: not its task at all
    (Finished(task_id=4, status="success", last_seq=0), Held(8), ReportVerdict.NOT_YOURS),
    # A task the hub does not hold (ended, or never there).
    (Accepted(task_id=4), None, ReportVerdict.NOT_YOURS),
    (Rejected(task_id=4, reason="no"), None, ReportVerdict.NOT_YOURS),
    (output(1), None, ReportVerdict.NOT_YOURS),
    (Finished(task_id=4, status="success", last_seq=5), None, ReportVerdict.GONE),
])
def test_a_runner_speaks_only_for_its_own_tasks(frame, task, verdict):
    assert judge_report(frame, 7, task) is verdict


@pytest.mark.parametrize(("frame", "words"), [
    (output(4), "output seq 4 after 2"),
    (Finished(task_id=4, status="success", last_seq=3), "finished at seq 3"),
])
def test_a_skipped_seq_ends_the_session(frame, words):
    verdict = judge_report(frame, 7, Held(7, received_seq=2))
    assert refused(verdict, "seq_gap", 1002) and words in verdict.message
