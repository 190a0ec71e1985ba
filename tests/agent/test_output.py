"""OutputCoalescer and pump_pipe: coalescing, stream switches, backpressure, real pipes."""

import asyncio
import time

from agent.output import OutputCoalescer, pump_pipe
from protocol.codec import decode_runner_frame, encode
from protocol.frames import Output
from protocol.ledger import OutputLedger
from protocol.limits import MAX_FRAME_BYTES, OUTPUT_FRAME_BYTES

DEADLINE = 30.0


def make_sink(max_unacked_bytes: int | None = None):
    frames: list[Output] = []
    ledger = OutputLedger(3)
    kwargs = {} if max_unacked_bytes is None else {"max_unacked_bytes": max_unacked_bytes}
    return frames, ledger, OutputCoalescer(ledger, frames.append, **kwargs)


def joined(frames: list[Output]) -> str:
    return "".join(f.data for f in frames)


async def pump_command(argv: list[str], sink: OutputCoalescer) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    await asyncio.wait_for(pump_pipe(proc.stdout, "stdout", sink), DEADLINE)
    sink.flush()
    return await proc.wait()


async def test_many_small_writes_become_few_frames_with_exact_data():
    frames, ledger, sink = make_sink()
    lines = [f"line {i}\n" for i in range(2000)]
    for line in lines:
        await sink.write("stdout", line)
    sink.flush()
    assert 0 < len(frames) < len(lines) / 10
    assert joined(frames) == "".join(lines)
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    assert all(len(f.data) < OUTPUT_FRAME_BYTES + 100 for f in frames)
    assert ledger.last_seq == len(frames)


async def test_quick_lines_from_a_real_process_are_coalesced():
    frames, _, sink = make_sink()
    script = "for i in $(seq 1 3000); do echo \"line $i\"; done"
    assert await pump_command(["bash", "-c", script], sink) == 0
    assert 0 < len(frames) < 300
    assert joined(frames) == "".join(f"line {i}\n" for i in range(1, 3001))


async def test_pending_text_is_flushed_by_the_timer_without_an_explicit_flush():
    frames, _, sink = make_sink()
    await sink.write("stdout", "lonely line\n")
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if frames:
            break
        await asyncio.sleep(0.01)
    assert [(f.seq, f.stream, f.data) for f in frames] == [(1, "stdout", "lonely line\n")]


async def test_a_stream_switch_flushes_the_pending_frame():
    frames, _, sink = make_sink()
    await sink.write("stdout", "a\n")
    await sink.write("stdout", "b\n")
    await sink.write("stderr", "oops\n")
    # Emitted by the switch itself: no time has passed for the timer to fire.
    assert [(f.seq, f.stream, f.data) for f in frames] == [(1, "stdout", "a\nb\n")]
    await sink.write("stdout", "c\n")
    sink.flush()
    assert [(f.seq, f.stream, f.data) for f in frames] == [
        (1, "stdout", "a\nb\n"), (2, "stderr", "oops\n"), (3, "stdout", "c\n")]


async def test_a_full_frame_is_sent_at_once():
    frames, _, sink = make_sink()
    await sink.write("stdout", "x" * OUTPUT_FRAME_BYTES)
    assert len(frames) == 1
    assert frames[0].data == "x" * OUTPUT_FRAME_BYTES


async def test_writer_waits_for_acks_when_too_much_is_unacked():
    frames, ledger, sink = make_sink(max_unacked_bytes=10)
    await sink.write("stdout", "x" * 20 + "\n")
    sink.flush()
    assert ledger.unacked_bytes == 21
    writer = asyncio.ensure_future(sink.write("stdout", "next\n"))
    await asyncio.sleep(0.3)
    assert not writer.done(), "the writer went on although 21 bytes were unacked"
    sink.acked()  # no ack reached the ledger: still no room
    await asyncio.sleep(0.1)
    assert not writer.done()
    ledger.ack(frames[-1].seq)
    sink.acked()
    await asyncio.wait_for(writer, DEADLINE)
    sink.flush()
    assert joined(frames) == "x" * 20 + "\n" + "next\n"


async def test_backpressure_holds_a_real_process_until_acks_come():
    frames, ledger, sink = make_sink(max_unacked_bytes=1000)
    line = "y" * 99 + "\n"
    script = f"for i in $(seq 1 20000); do echo {line.strip()}; done"
    proc = await asyncio.create_subprocess_exec("bash", "-c", script,
                                                stdout=asyncio.subprocess.PIPE)
    pump = asyncio.ensure_future(pump_pipe(proc.stdout, "stdout", sink))
    try:
        # 2 MB cannot pass through a pipe whose reader waits for acks.
        await asyncio.sleep(1.0)
        assert proc.returncode is None, "the process finished without any ack"
        assert not pump.done()
        assert ledger.unacked_bytes < 200 * 1024
    finally:
        deadline = time.monotonic() + DEADLINE
        while not pump.done() and time.monotonic() < deadline:
            ledger.ack(ledger.last_seq)
            sink.acked()
            await asyncio.sleep(0.01)
        await asyncio.wait_for(pump, 1)
    sink.flush()
    assert await proc.wait() == 0
    assert joined(frames) == line * 20000


async def test_invalid_utf8_is_replaced_and_a_last_line_without_newline_arrives():
    frames, _, sink = make_sink()
    code = await pump_command(["printf", r"ok\n\377\376 bad\nlast"], sink)
    assert code == 0
    assert joined(frames) == "ok\n\ufffd\ufffd bad\nlast"


async def test_a_character_split_across_writes_is_not_mangled():
    frames, _, sink = make_sink()
    script = r"printf 'caf\303'; sleep 0.5; printf '\251\n'"
    assert await pump_command(["bash", "-c", script], sink) == 0
    assert joined(frames) == "café\n"


async def test_a_very_long_line_is_split_into_frames_the_hub_accepts():
    frames, _, sink = make_sink()
    size = 3 * MAX_FRAME_BYTES
    script = f"import sys; sys.stdout.write('z' * {size} + '\\n')"
    assert await pump_command(["python3", "-c", script], sink) == 0
    assert joined(frames) == "z" * size + "\n"
    for frame in frames:
        encoded = encode(frame)
        assert len(encoded) <= MAX_FRAME_BYTES, (
            f"frame {frame.seq} is {len(encoded)} bytes, over MAX_FRAME_BYTES")
        assert decode_runner_frame(encoded) == frame


async def test_output_limit_counts_bytes_and_never_splits_a_character():
    frames: list[Output] = []
    ledger = OutputLedger(1)
    sink = OutputCoalescer(ledger, frames.append, max_output=10)
    await sink.write("stdout", "ééééé")  # 10 bytes: exactly the limit
    await sink.write("stdout", "éa")     # over it
    await sink.write("stdout", "more")   # dropped
    sink.flush()
    text = "".join(f.data for f in frames)
    assert text == ("ééééé\n[output cut: the task printed more than 10 bytes; "
                    "the rest is not kept]\n")
