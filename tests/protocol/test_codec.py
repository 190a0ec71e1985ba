"""The codec: exact wire format of every frame, and every malformed input is a ProtocolError."""

import json
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Accepted,
    Ack,
    Assign,
    Cancel,
    Confirmation,
    Decision,
    Error,
    Finished,
    Heartbeat,
    HeldTask,
    Hello,
    HubFrame,
    Metrics,
    Output,
    ProtocolError,
    Rejected,
    RepositorySpec,
    RunnerFrame,
    TaskSpec,
    Welcome,
    decode_hub_frame,
    decode_runner_frame,
    encode,
)
from protocol.frames import InventorySpec, TaskAck, Update, UpdateProgress
from protocol.numbers import INT64_MAX, UNIX_TIME_MAX

RUNNER_TYPES = typing.get_args(RunnerFrame)
HUB_TYPES = typing.get_args(HubFrame)

RUNNER_GOLDEN = [
    (Hello(protocol_version=1, runner_version="1.2.3", name="web-1", tags=["prod", "eu"],
           max_parallel_tasks=2, platform="linux/amd64",
           held_tasks=[HeldTask(task_id=7, state="running", last_seq=3, awaiting=True)],
           shared_identity=False, apps={"bash": "GNU bash, version 5.2.15"},
           update_error="restored 1.2.2"),
     b'{"type":"hello","protocol_version":1,"runner_version":"1.2.3","name":"web-1",'
     b'"tags":["prod","eu"],"max_parallel_tasks":2,"platform":"linux/amd64",'
     b'"held_tasks":[{"task_id":7,"state":"running","last_seq":3,"awaiting":true}],'
     b'"shared_identity":false,'
     b'"apps":{"bash":"GNU bash, version 5.2.15"},"update_error":"restored 1.2.2"}'),
    (UpdateProgress(version="1.2.4", state="failed", reason="bad signature"),
     b'{"type":"update_progress","version":"1.2.4","state":"failed","reason":"bad signature"}'),
    (Heartbeat(time=1700000000.5, running=[7, 8],
               metrics=Metrics(cpu_percent=12.5, memory_used=1024, memory_total=4096,
                               disk_free=2048, load1=0.25), draining=True),
     b'{"type":"heartbeat","time":1700000000.5,"running":[7,8],"metrics":{"cpu_percent":12.5,'
     b'"memory_used":1024,"memory_total":4096,"disk_free":2048,"load1":0.25},"draining":true}'),
    (Accepted(task_id=7), b'{"type":"accepted","task_id":7}'),
    (Rejected(task_id=7, reason="busy"), b'{"type":"rejected","task_id":7,"reason":"busy"}'),
    (Output(task_id=7, seq=3, stream="stderr", data='caf\u00e9 "q"\n', time=1.25),
     '{"type":"output","task_id":7,"seq":3,"stream":"stderr","data":"caf\u00e9 \\"q\\"\\n",'
     '"time":1.25}'.encode()),
    (Finished(task_id=7, status="error", last_seq=3, exit_code=2, message="failed",
              commit_hash="abc123", commit_message="fix it"),
     b'{"type":"finished","task_id":7,"status":"error","last_seq":3,"exit_code":2,'
     b'"message":"failed","commit_hash":"abc123","commit_message":"fix it"}'),
    (Confirmation(task_id=7, state="applying"),
     b'{"type":"confirmation","task_id":7,"state":"applying"}'),
    (Error(code="bad_frame", message="oops"),
     b'{"type":"error","code":"bad_frame","message":"oops"}'),
]

HUB_GOLDEN = [
    (Welcome(protocol_version=1, session_id="s-1", runner_id=4, heartbeat_interval=5.0,
             max_frame_bytes=1048576, max_output_bytes=100,
             acked=[TaskAck(task_id=7, seq=3)], tags=["prod"], notice="not taken"),
     b'{"type":"welcome","protocol_version":1,"session_id":"s-1","runner_id":4,'
     b'"heartbeat_interval":5.0,"max_frame_bytes":1048576,"max_output_bytes":100,'
     b'"acked":[{"task_id":7,"seq":3}],"tags":["prod"],"notice":"not taken"}'),
    (Assign(task_id=7, spec=TaskSpec(
        project_id=1, template_id=2, app="ansible", playbook="site.yml", arguments=["-v"],
        task_arguments=["--check"], environment={"A": "1"}, extra_vars={"region": "eu", "n": 2},
        sealed_secrets="c2VhbGVk",
        repository=RepositorySpec(url="https://git.example/x.git", branch="main"),
        commit_hash="abc", timeout_sec=60, message="deploy",
        inventory=InventorySpec(type="static", content="[web]\nh1\n"), debug=True,
        dry_run=True, limit="web", tags="deploy,db", skip_tags="slow", username="admin",
        web_host="https://hub.example",
        vault_scripts={"v": "vault.sh"})),
     b'{"type":"assign","task_id":7,"spec":{"project_id":1,"template_id":2,"app":"ansible",'
     b'"playbook":"site.yml","arguments":["-v"],"task_arguments":["--check"],'
     b'"environment":{"A":"1"},"extra_vars":{"region":"eu","n":2},"sealed_secrets":"c2VhbGVk",'
     b'"repository":{"url":"https://git.example/x.git","branch":"main"},"commit_hash":"abc",'
     b'"timeout_sec":60,"message":"deploy","inventory":{"type":"static",'
     b'"content":"[web]\\nh1\\n","path":""},"debug":true,"diff":false,"dry_run":true,'
     b'"limit":"web","tags":"deploy,db","skip_tags":"slow","username":"admin",'
     b'"web_host":"https://hub.example",'
     b'"vault_scripts":{"v":"vault.sh"}}}'),
    (Ack(task_id=7, seq=3, finished=True),
     b'{"type":"ack","task_id":7,"seq":3,"finished":true}'),
    (Cancel(task_id=7, reason="user"), b'{"type":"cancel","task_id":7,"reason":"user"}'),
    (Decision(task_id=7, approved=False, message="plan rejected by bob"),
     b'{"type":"decision","task_id":7,"approved":false,"message":"plan rejected by bob"}'),
    (Update(version="1.2.4", path="/api/runner/binary?arch=amd64&version=1.2.4",
            sha256="ab" * 32, signature="c2ln", size=9, arch="amd64", deadline_sec=60.0),
     b'{"type":"update","version":"1.2.4","path":"/api/runner/binary?arch=amd64&version=1.2.4",'
     b'"sha256":"' + b"ab" * 32 + b'","signature":"c2ln","size":9,"arch":"amd64",'
     b'"deadline_sec":60.0}'),
    (Error(code="bad_frame", message="oops"),
     b'{"type":"error","code":"bad_frame","message":"oops"}'),
]

DECODERS = {"runner": decode_runner_frame, "hub": decode_hub_frame}


def _golden_cases():
    for frame, golden in RUNNER_GOLDEN:
        yield pytest.param("runner", frame, golden, id=f"runner-{type(frame).__name__}")
    for frame, golden in HUB_GOLDEN:
        yield pytest.param("hub", frame, golden, id=f"hub-{type(frame).__name__}")


@pytest.mark.parametrize(("side", "frame", "golden"), list(_golden_cases()))
def test_golden_json(side, frame, golden):
    assert encode(frame) == golden
    assert DECODERS[side](golden) == frame
    assert DECODERS[side](golden.decode()) == frame


@pytest.mark.parametrize(("side", "frame", "golden"), list(_golden_cases()))
def test_unknown_fields_are_ignored(side, frame, golden):
    data = json.loads(golden)
    data["added_in_v9"] = {"nested": [1, 2, 3]}
    assert DECODERS[side](json.dumps(data)) == frame


def test_unknown_fields_in_nested_shapes_are_ignored():
    data = json.loads(HUB_GOLDEN[0][1])
    data["acked"][0]["future"] = True
    assert decode_hub_frame(json.dumps(data)) == HUB_GOLDEN[0][0]


@pytest.mark.parametrize(("decode", "text", "expected"), [
    (decode_runner_frame, '{"type":"hello","protocol_version":1,"runner_version":"x"}',
     Hello(protocol_version=1, runner_version="x", name="", tags=[], max_parallel_tasks=0,
           platform="", held_tasks=[])),
    (decode_runner_frame, '{"type":"heartbeat","time":2.5}',
     Heartbeat(time=2.5, running=[], metrics=Metrics(0.0, 0, 0, 0, 0.0), draining=False)),
    (decode_runner_frame, '{"type":"finished","task_id":1,"status":"success","last_seq":0}',
     Finished(task_id=1, status="success", last_seq=0, exit_code=None, message="",
              commit_hash="", commit_message="")),
    (decode_hub_frame, '{"type":"ack","task_id":1,"seq":2}', Ack(task_id=1, seq=2,
                                                                finished=False)),
    (decode_hub_frame, '{"type":"cancel","task_id":1}', Cancel(task_id=1, reason="")),
    (decode_hub_frame, '{"type":"assign","task_id":1,"spec":{"project_id":1,"template_id":2,'
     '"app":"bash"}}',
     Assign(task_id=1, spec=TaskSpec(project_id=1, template_id=2, app="bash", playbook="",
                                     arguments=[], environment={}, sealed_secrets="",
                                     repository=None,
                                     commit_hash="", timeout_sec=0, message=""))),
    (decode_hub_frame, '{"type":"welcome","protocol_version":1,"session_id":"s","runner_id":1,'
     '"heartbeat_interval":1,"max_frame_bytes":10,"max_output_bytes":10}',
     Welcome(protocol_version=1, session_id="s", runner_id=1, heartbeat_interval=1.0,
             max_frame_bytes=10, max_output_bytes=10, acked=[])),
])
def test_omitted_defaulted_fields_take_their_defaults(decode, text, expected):
    assert decode(text) == expected


def _wrong_direction_cases():
    for frame, golden in HUB_GOLDEN:
        if not isinstance(frame, Error):
            yield pytest.param(decode_runner_frame, golden, id=f"to-hub-{type(frame).__name__}")
    for frame, golden in RUNNER_GOLDEN:
        if not isinstance(frame, Error):
            yield pytest.param(decode_hub_frame, golden, id=f"to-runner-{type(frame).__name__}")
    for decode in (decode_runner_frame, decode_hub_frame):
        yield pytest.param(decode, b'{"type":"bogus","task_id":1}', id=f"bogus-{decode.__name__}")


@pytest.mark.parametrize(("decode", "data"), list(_wrong_direction_cases()))
def test_frame_of_wrong_direction_or_unknown_type_is_protocol_error(decode, data):
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.code == "unknown_type"
    assert info.value.close_code == 1002


@pytest.mark.parametrize("as_text", [False, True])
@pytest.mark.parametrize(("side", "frame", "golden"), list(_golden_cases()))
def test_frame_over_the_limit_is_too_big(side, frame, golden, as_text):
    data = golden.decode() if as_text else golden
    assert DECODERS[side](data, max_bytes=len(golden)) == frame
    with pytest.raises(ProtocolError) as info:
        DECODERS[side](data, max_bytes=len(golden) - 1)
    assert info.value.code == "frame_too_big"
    assert info.value.close_code == 1009


def test_text_size_is_counted_in_utf8_bytes():
    text = '{"type":"error","code":"x","message":"' + "\u00e9" * 20 + '"}'
    assert len(text) < 70 < len(text.encode())
    with pytest.raises(ProtocolError) as info:
        decode_runner_frame(text, max_bytes=70)
    assert info.value.code == "frame_too_big"
    assert info.value.close_code == 1009


@pytest.mark.parametrize("data", [
    b"", b"not json", b"{", b'{"type":"error","code":"x"', b"\xff\xfe",
    b'{"type":"error","code":"\xff","message":""}',
    '{"type":"error","code":"\ud800","message":""}',
    b"[]", b'[{"type":"accepted","task_id":1}]', b"1", b"1.5", b'"accepted"', b"null",
    b"{}", b'{"task_id":1}', b'{"type":5,"task_id":1}', b'{"type":null}',
])
@pytest.mark.parametrize("decode", [decode_runner_frame, decode_hub_frame])
def test_malformed_input_is_invalid_data(decode, data):
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.close_code == 1007


@pytest.mark.parametrize(("decode", "data", "field"), [
    (decode_runner_frame, {"type": "output", "task_id": 1, "seq": "3", "stream": "stdout",
                           "data": "", "time": 0}, "`seq`"),
    (decode_runner_frame, {"type": "output", "task_id": 1, "seq": 3, "stream": "stdin",
                           "data": "", "time": 0}, "`stream`"),
    (decode_runner_frame, {"type": "output", "task_id": 1, "seq": 3, "stream": "stdout",
                           "data": "", "time": "now"}, "`time`"),
    (decode_runner_frame, {"type": "accepted", "task_id": None}, "`task_id`"),
    (decode_runner_frame, {"type": "hello", "protocol_version": 1, "runner_version": "x",
                           "tags": ["a", 1]}, "`tags[1]`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "metrics": {"cpu_percent": "x"}},
     "`metrics.cpu_percent`"),
    (decode_runner_frame, {"type": "finished", "task_id": 1, "status": "ok", "last_seq": 0},
     "`status`"),
    (decode_hub_frame, {"type": "assign", "task_id": 1,
                        "spec": {"project_id": "1", "template_id": 2, "app": "a"}},
     "`spec.project_id`"),
    (decode_hub_frame, {"type": "welcome", "protocol_version": 1, "session_id": "s",
                        "runner_id": 1, "heartbeat_interval": 1, "max_frame_bytes": 1,
                        "max_output_bytes": 1, "acked": [{"task_id": 1, "seq": []}]},
     "`acked[0].seq`"),
    (decode_hub_frame, {"type": "ack", "task_id": 1, "seq": 2, "finished": "yes"},
     "`finished`"),
    (decode_hub_frame, {"type": "ack", "seq": 2}, "task_id"),
    (decode_hub_frame, {"type": "cancel"}, "task_id"),
])
def test_wrong_field_is_named_in_the_error(decode, data, field):
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(data))
    assert info.value.code == "invalid_frame"
    assert info.value.close_code == 1007
    assert field in info.value.message


def _output(**numbers) -> dict:
    return {"type": "output", "task_id": 1, "seq": 1, "stream": "stdout", "data": "",
            "time": 0, **numbers}


def _welcome(**numbers) -> dict:
    return {"type": "welcome", "protocol_version": 1, "session_id": "s", "runner_id": 1,
            "heartbeat_interval": 5, "max_frame_bytes": 1, "max_output_bytes": 1, **numbers}


# Numbers a receiver could not store or show: each frame is refused, naming the field, by
# the codec (a `time` of 1e308 used to break the task's /output when read back).
@pytest.mark.parametrize(("decode", "data", "field"), [
    (decode_runner_frame, _output(time=1e308), "`time`"),
    (decode_runner_frame, _output(time=-1.5), "`time`"),
    (decode_runner_frame, _output(time=UNIX_TIME_MAX + 1), "`time`"),
    (decode_runner_frame, _output(seq=0), "`seq`"),
    (decode_runner_frame, _output(seq=-1), "`seq`"),
    (decode_runner_frame, _output(seq=2**64), "`seq`"),
    (decode_runner_frame, _output(task_id=0), "`task_id`"),
    (decode_runner_frame, _output(task_id=INT64_MAX + 1), "`task_id`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1e300}, "`time`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "running": [1, -7]},
     "`running[1]`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "metrics": {"cpu_percent": -1}},
     "`metrics.cpu_percent`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "metrics": {"cpu_percent": 1e300}},
     "`metrics.cpu_percent`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "metrics": {"memory_used": 2**70}},
     "`metrics.memory_used`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "metrics": {"disk_free": -1}},
     "`metrics.disk_free`"),
    (decode_runner_frame, {"type": "heartbeat", "time": 1, "metrics": {"load1": -0.5}},
     "`metrics.load1`"),
    (decode_runner_frame, {"type": "hello", "protocol_version": 1, "runner_version": "x",
                           "held_tasks": [{"task_id": 1, "state": "running",
                                           "last_seq": -3}]},
     "`held_tasks[0].last_seq`"),
    (decode_runner_frame, {"type": "finished", "task_id": 1, "status": "error",
                           "last_seq": 0, "exit_code": 2**40}, "`exit_code`"),
    (decode_runner_frame, {"type": "finished", "task_id": 1, "status": "error",
                           "last_seq": -1}, "`last_seq`"),
    (decode_runner_frame, {"type": "accepted", "task_id": -4242}, "`task_id`"),
    (decode_runner_frame, {"type": "rejected", "task_id": 2**63, "reason": ""},
     "`task_id`"),
    (decode_hub_frame, {"type": "ack", "task_id": 1, "seq": -1}, "`seq`"),
    (decode_hub_frame, _welcome(acked=[{"task_id": 0, "seq": 1}]), "`acked[0].task_id`"),
    (decode_hub_frame, _welcome(heartbeat_interval=0), "`heartbeat_interval`"),
    (decode_hub_frame, _welcome(heartbeat_interval=1e9), "`heartbeat_interval`"),
    (decode_hub_frame, _welcome(runner_id=0), "`runner_id`"),
    (decode_hub_frame, _welcome(max_frame_bytes=-1), "`max_frame_bytes`"),
    (decode_hub_frame, _welcome(protocol_version=-1), "`protocol_version`"),
])
def test_numbers_out_of_range_are_refused_naming_the_field(decode, data, field):
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(data))
    assert info.value.code == "invalid_frame"
    assert info.value.close_code == 1007
    assert info.value.message.startswith(f"invalid frame: field {field}: "), info.value


@pytest.mark.parametrize(("literal", "code"), [
    ("1e400", "invalid_frame"), ("-1e400", "invalid_frame"),  # overflow: infinity
    ("NaN", "malformed_frame"), ("Infinity", "malformed_frame"),  # not JSON at all
])
def test_no_infinity_or_nan_gets_through(literal, code):
    with pytest.raises(ProtocolError) as info:
        decode_runner_frame(json.dumps(_output()).replace('"time": 0', f'"time": {literal}'))
    assert info.value.code == code
    if code == "invalid_frame":
        assert "`time`" in info.value.message


def test_the_edges_of_the_ranges_are_accepted():
    frame = decode_runner_frame(json.dumps(_output(task_id=INT64_MAX, seq=INT64_MAX,
                                                   time=UNIX_TIME_MAX)))
    assert (frame.task_id, frame.seq, frame.time) == (INT64_MAX, INT64_MAX, UNIX_TIME_MAX)
    finished = decode_runner_frame(json.dumps({"type": "finished", "task_id": 1,
                                               "status": "stopped", "last_seq": 0,
                                               "exit_code": -9}))
    assert finished.exit_code == -9


def test_deep_nesting_in_a_skipped_field_is_a_protocol_error():
    data = '{"type": "heartbeat", "time": 1, "extra": ' + "[" * 200_000 + "]" * 200_000 + "}"
    with pytest.raises(ProtocolError) as info:
        decode_runner_frame(data)
    assert (info.value.code, info.value.close_code) == ("malformed_frame", 1007)


def test_error_messages_are_cut_short():
    with pytest.raises(ProtocolError) as info:
        decode_runner_frame(json.dumps(_output(stream="x" * 100_000)))
    assert info.value.message.startswith("invalid frame: field `stream`: ")
    assert len(info.value.message) < 400


@pytest.mark.parametrize("data", [None, 42, {"type": "accepted"}, ["x"]])
def test_non_text_input_is_protocol_error(data):
    with pytest.raises(ProtocolError) as info:
        decode_runner_frame(data)
    assert info.value.close_code == 1007


# Fuzzing: whatever arrives, decoding returns a frame of the union or raises ProtocolError.

FUZZ = settings(max_examples=400, deadline=None)

json_scalars = (st.none() | st.booleans() | st.integers() | st.text()
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
frame_types = st.sampled_from(["hello", "heartbeat", "accepted", "rejected", "output",
                               "finished", "error", "welcome", "assign", "ack", "cancel"])
frame_like = st.dictionaries(st.sampled_from(["task_id", "seq", "stream", "data", "time"]),
                             json_values).flatmap(
    lambda d: frame_types.map(lambda t: {**d, "type": t}))


def _decodes_or_protocol_error(data) -> None:
    for decode, types in ((decode_runner_frame, RUNNER_TYPES), (decode_hub_frame, HUB_TYPES)):
        try:
            frame = decode(data)
        except ProtocolError as exc:
            assert exc.close_code in (1002, 1007, 1009)
        else:
            assert isinstance(frame, types)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data):
    _decodes_or_protocol_error(data)


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_arbitrary_text(data):
    _decodes_or_protocol_error(data)


@FUZZ
@given(json_values | frame_like)
def test_fuzz_arbitrary_json(value):
    _decodes_or_protocol_error(json.dumps(value))


@FUZZ
@given(st.sampled_from(RUNNER_GOLDEN + HUB_GOLDEN), st.data())
def test_fuzz_mutated_valid_frames(case, data):
    value = json.loads(case[1])
    keys = sorted(value)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(keys))
        if data.draw(st.booleans()):
            value.pop(key, None)
        else:
            value[key] = data.draw(json_values)
    _decodes_or_protocol_error(json.dumps(value))
    _decodes_or_protocol_error(json.dumps(value).encode())


@FUZZ
@given(st.text(st.characters(blacklist_categories=("Cs",))),
       st.floats(0, UNIX_TIME_MAX), st.integers(1, INT64_MAX))
def test_output_round_trips(data, time, seq):
    frame = Output(task_id=1, seq=seq, stream="stdout", data=data, time=time)
    assert decode_runner_frame(encode(frame)) == frame
