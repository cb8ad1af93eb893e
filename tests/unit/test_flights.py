"""One at a time per key (metafs/flights.py): what the server does once however many
clients ask at the same time."""

from __future__ import annotations

import anyio
import pytest

from metafs.flights import Flights

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]


async def test_one_first_per_key_and_the_others_wait_for_it(anyio_backend: str) -> None:
    flights: Flights[tuple[int, str]] = Flights()
    firsts: list[bool] = []
    done: list[str] = []

    async def caller(key: tuple[int, str]) -> None:
        async with flights.first(key, wait=5) as first:
            firsts.append(first)
            if first:
                await anyio.sleep(0.05)
                done.append("first")
            else:
                assert done == ["first"]  # let in once the first is done

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(caller, (3, "u/a/"))
    assert firsts.count(True) == 1 and len(firsts) == 5
    assert len(flights) == 0  # gone once done


async def test_a_first_that_fails_lets_the_others_in(anyio_backend: str) -> None:
    flights: Flights[str] = Flights()
    seen: list[bool] = []

    async def failing() -> None:
        with pytest.raises(RuntimeError):
            async with flights.first("k", wait=5):
                await anyio.sleep(0.05)
                raise RuntimeError("store down")

    async def later() -> None:
        await anyio.sleep(0.01)
        with anyio.fail_after(2):
            async with flights.first("k", wait=5) as first:
                seen.append(first)

    async with anyio.create_task_group() as tg:
        tg.start_soon(failing)
        tg.start_soon(later)
    assert seen == [False] and len(flights) == 0


async def test_the_wait_is_bounded(anyio_backend: str) -> None:
    """A first that never ends does not hold the others (they go on after ``wait``)."""
    flights: Flights[str] = Flights()

    async def stuck() -> None:
        async with flights.first("k", wait=5):
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stuck)
        await anyio.sleep(0.01)
        with anyio.fail_after(5):  # an unbounded wait fails here
            async with flights.first("k", wait=0.1) as first:
                assert not first
        tg.cancel_scope.cancel()
    assert len(flights) == 0
