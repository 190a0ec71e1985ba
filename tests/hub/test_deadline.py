"""ReceiveDeadline: a wait ends at its deadline, one timer serves a whole session."""

import asyncio

import pytest

from hub.deadline import ReceiveDeadline


async def test_a_wait_with_nothing_coming_ends_at_its_deadline():
    loop = asyncio.get_running_loop()
    deadline = ReceiveDeadline()
    never = loop.create_future()
    started = loop.time()
    assert await deadline.wait(never, started + 0.1) is None
    assert 0.09 <= loop.time() - started < 1.0
    assert not never.done() or never.cancelled()
    deadline.close()


async def test_messages_in_time_are_returned_and_the_deadline_moves_with_each():
    loop = asyncio.get_running_loop()
    deadline = ReceiveDeadline()
    queue: asyncio.Queue[int] = asyncio.Queue()

    async def feed() -> None:
        for i in range(20):
            await asyncio.sleep(0.02)
            queue.put_nowait(i)

    feeder = asyncio.create_task(feed())
    got = []
    for _ in range(20):  # each wait allows 0.1 s: 20 x 0.02 s would pass one fixed deadline
        got.append(await deadline.wait(queue.get(), loop.time() + 0.1))
    assert got == list(range(20))
    await feeder
    # Then silence: the last deadline ends the wait.
    assert await deadline.wait(queue.get(), loop.time() + 0.05) is None
    deadline.close()


async def test_one_timer_serves_many_waits():
    loop = asyncio.get_running_loop()
    deadline = ReceiveDeadline()
    armed = []
    real_call_at = loop.call_at

    def counting_call_at(when, callback, *args, **kwargs):
        armed.append(when)
        return real_call_at(when, callback, *args, **kwargs)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        for _ in range(1000):
            done = loop.create_future()
            done.set_result("frame")
            assert await deadline.wait(done, loop.time() + 30) == "frame"
    finally:
        loop.call_at = real_call_at  # type: ignore[method-assign]
        deadline.close()
    assert len(armed) == 1  # asyncio.timeout would have armed 1,000


async def test_a_deadline_already_passed_returns_at_once():
    loop = asyncio.get_running_loop()
    deadline = ReceiveDeadline()

    async def never_started() -> int:
        raise AssertionError("must not run")

    assert await deadline.wait(never_started(), loop.time() - 1) is None
    deadline.close()


async def test_someone_elses_cancel_still_cancels():
    loop = asyncio.get_running_loop()
    deadline = ReceiveDeadline()
    waiting = asyncio.create_task(deadline.wait(loop.create_future(), loop.time() + 5))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    deadline.close()


async def test_an_earlier_deadline_rearms_the_timer():
    loop = asyncio.get_running_loop()
    deadline = ReceiveDeadline()
    done = loop.create_future()
    done.set_result(1)
    await deadline.wait(done, loop.time() + 30)  # a timer for 30 s from now
    started = loop.time()
    assert await deadline.wait(loop.create_future(), started + 0.05) is None
    assert loop.time() - started < 1.0
    deadline.close()
