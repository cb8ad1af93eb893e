"""The delay between tries: doubling, capped, back to the least after a success."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from metafs.backoff import Backoff


@pytest.mark.timeout(10)
def test_the_delay_doubles_up_to_the_most_and_a_reset_brings_back_the_least() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    slept: list[float] = []

    async def main() -> None:
        b = Backoff(0.1, 0.5)
        for _ in range(5):
            t0 = trio.current_time()
            await b.wait()
            slept.append(round(trio.current_time() - t0, 6))
        b.reset()
        t0 = trio.current_time()
        await b.wait()
        slept.append(round(trio.current_time() - t0, 6))

    trio.run(main, clock=clock)
    assert slept == [0.1, 0.2, 0.4, 0.5, 0.5, 0.1]
