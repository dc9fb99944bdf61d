"""driftmon.serving.slots: a few slots shared by several event loops, released from other threads."""

from __future__ import annotations

import asyncio
import threading
import time

from driftmon.serving.slots import Slots


def on_new_loop(coroutine_function, *args):
    """Run ``coroutine_function(*args)`` on an event loop of its own thread; returns (thread, results)."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(coroutine_function(*args))), daemon=True)
    thread.start()
    return thread, results


def test_a_released_slot_goes_to_the_oldest_waiter_on_its_own_loop():
    slots = Slots(limit=1, max_waiting=4)
    order: list[str] = []

    async def take(name: str) -> bool:
        got = await slots.acquire(5.0)
        order.append(name)
        return got

    first, _ = on_new_loop(take, "holder")
    first.join(5)
    waiters = []
    for name in ("a", "b"):  # on two other loops, a then b
        waiters.append(on_new_loop(take, name))
        deadline = time.monotonic() + 5
        while slots.waiting < len(waiters) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert slots.waiting == 2
    slots.release()  # from this thread: to a, on a's loop
    waiters[0][0].join(5)
    assert order == ["holder", "a"] and waiters[0][1] == [True] and slots.waiting == 1
    slots.release()
    waiters[1][0].join(5)
    assert order == ["holder", "a", "b"] and waiters[1][1] == [True]


def test_a_waiter_gives_up_after_its_wait_and_leaves_the_queue():
    slots = Slots(limit=1, max_waiting=4)

    async def scenario() -> tuple[bool, bool, float]:
        assert await slots.acquire(0.0)
        began = time.monotonic()
        refused = await slots.acquire(0.2)
        waited = time.monotonic() - began
        slots.release()
        return refused, await slots.acquire(0.0), waited  # the slot is free again: nobody waits for it

    refused, again, waited = asyncio.run(scenario())
    assert (refused, again) == (False, True) and 0.15 < waited < 2
    assert slots.waiting == 0


def test_a_full_queue_refuses_at_once():
    slots = Slots(limit=1, max_waiting=1)

    async def scenario() -> list[bool]:
        assert await slots.acquire(0.0)
        queued = asyncio.create_task(slots.acquire(5.0))
        await asyncio.sleep(0.05)
        began = time.monotonic()
        refused = await slots.acquire(5.0)
        assert time.monotonic() - began < 1
        slots.release()
        return [refused, await queued]

    assert asyncio.run(scenario()) == [False, True]


def test_a_waiter_cancelled_after_it_was_handed_a_slot_gives_it_back():
    slots = Slots(limit=1, max_waiting=4)

    async def scenario() -> bool:
        assert await slots.acquire(0.0)
        waiting = asyncio.create_task(slots.acquire(5.0))
        await asyncio.sleep(0.05)
        slots.release()  # handed to the waiter, whose task is cancelled before it runs again
        waiting.cancel()
        try:
            await waiting
        except asyncio.CancelledError:
            pass
        return await slots.acquire(0.0)

    assert asyncio.run(scenario()) is True
