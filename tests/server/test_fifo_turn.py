"""The per-model turn: strictly first come, first served; a waiter that is cancelled leaves the line."""

from __future__ import annotations

import asyncio

from localchat.server.pool import FifoTurn


def test_turns_are_handed_out_in_arrival_order_and_cancelled_waiters_leave():
    async def scenario() -> list[int]:
        turn = FifoTurn()
        order: list[int] = []
        await turn.acquire()  # someone holds it

        async def waiter(i: int) -> None:
            await turn.acquire()
            order.append(i)
            await asyncio.sleep(0)
            turn.release()

        tasks = []
        for i in range(5):
            tasks.append(asyncio.create_task(waiter(i)))
            await asyncio.sleep(0)  # each is in line before the next arrives
        assert turn.waiting == 5
        tasks[2].cancel()  # a client that went away
        await asyncio.sleep(0)
        assert turn.waiting == 4
        late = asyncio.create_task(waiter(9))
        await asyncio.sleep(0)
        turn.release()
        await asyncio.gather(*tasks, late, return_exceptions=True)
        assert not turn.held and turn.waiting == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 3, 4, 9]


def test_a_turn_handed_to_a_waiter_cancelled_at_that_moment_passes_on():
    async def scenario() -> list[str]:
        turn = FifoTurn()
        got: list[str] = []
        await turn.acquire()

        async def waiter(name: str) -> None:
            await turn.acquire()
            got.append(name)
            turn.release()

        first = asyncio.create_task(waiter("first"))
        second = asyncio.create_task(waiter("second"))
        await asyncio.sleep(0)
        turn.release()  # hands the turn to `first`...
        first.cancel()  # ...which is cancelled before it could run
        await asyncio.gather(first, second, return_exceptions=True)
        assert not turn.held
        return got

    assert asyncio.run(scenario()) == ["second"]


def test_with_several_slots_that_many_requests_run_at_once_and_the_rest_wait_in_order():
    async def scenario() -> tuple[list[str], int]:
        turn = FifoTurn(capacity=3)
        running: set[str] = set()
        peak = 0
        started: list[str] = []
        gates = {f"r{i}": asyncio.Event() for i in range(7)}

        async def request(name: str) -> None:
            nonlocal peak
            await turn.acquire()
            started.append(name)
            running.add(name)
            peak = max(peak, len(running))
            await gates[name].wait()
            running.discard(name)
            turn.release()

        tasks = []
        for name in gates:
            tasks.append(asyncio.create_task(request(name)))
            await asyncio.sleep(0)
        assert turn.in_use == 3 and turn.waiting == 4 and started == ["r0", "r1", "r2"]
        tasks[4].cancel()  # r4 hangs up while it waits
        gates["r1"].set()  # one slot frees: the next in line (r3) takes it, r4 is gone
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert started == ["r0", "r1", "r2", "r3"] and turn.in_use == 3
        for gate in gates.values():
            gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert turn.in_use == 0 and not turn.held and turn.waiting == 0
        return started, peak

    started, peak = asyncio.run(scenario())
    assert started == ["r0", "r1", "r2", "r3", "r5", "r6"] and peak == 3
