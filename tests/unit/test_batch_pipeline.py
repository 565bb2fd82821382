"""The worker's batch pipeline: events taken as they come, batches prepared ahead, settled strictly in order."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import pytest

from streams.worker.batch_pipeline import BatchPipeline
from streams.worker.inbox import Inbox


class Stopped(Exception):
    """What the tests' on_failure raises in place of ending the process."""


def fail(error: BaseException) -> NoReturn:
    raise Stopped(repr(error))


def first_batch_held() -> tuple[list[list[int]], asyncio.Event, Any, Any]:
    """Stages that record each batch taken, and hold the batch ``[0]`` in settle until the event is set."""
    taken: list[list[int]] = []
    settle_may_finish = asyncio.Event()

    async def prepare(batch: list[int]) -> None:
        taken.append(batch)

    async def settle(batch: list[int], _: None) -> None:
        if batch == [0]:
            await settle_may_finish.wait()

    return taken, settle_may_finish, prepare, settle


async def test_inbox_hands_over_everything_waiting_up_to_the_batch_size_in_order():
    inbox: Inbox[int] = Inbox(10)
    for item in range(7):
        await inbox.put(item)
    assert await inbox.take(5) == [0, 1, 2, 3, 4]
    assert await inbox.take(5) == [5, 6]


async def test_inbox_take_waits_for_the_first_item_and_put_waits_for_room():
    inbox: Inbox[int] = Inbox(2)
    taker = asyncio.ensure_future(inbox.take(10))
    await asyncio.sleep(0.01)
    assert not taker.done()
    await inbox.put(1)
    assert await asyncio.wait_for(taker, 1) == [1]

    await inbox.put(2)
    await inbox.put(3)
    putter = asyncio.ensure_future(inbox.put(4))
    await asyncio.sleep(0.01)
    assert not putter.done(), "a full inbox must hold the stream back"
    assert await inbox.take(1) == [2]
    await asyncio.wait_for(putter, 1)
    assert await inbox.take(10) == [3, 4]


def test_an_inbox_without_room_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        Inbox(0)


async def test_the_next_batch_is_prepared_while_the_previous_waits_and_settling_keeps_the_order():
    log: list[str] = []
    first_settle_may_finish = asyncio.Event()

    async def prepare(batch: list[int]) -> str:
        log.append(f"prepare {batch}")
        return f"output of {batch}"

    async def settle(batch: list[int], prepared: str) -> None:
        log.append(f"settle {batch} start")
        if batch == [1]:
            await first_settle_may_finish.wait()
        log.append(f"settle {batch} done")

    pipeline = BatchPipeline(prepare, settle, fail, batch_size=3, in_flight=2)
    pipeline.start()
    await pipeline.put(1)
    await asyncio.sleep(0.01)
    for event in (2, 3, 4):
        await pipeline.put(event)
    await asyncio.sleep(0.01)
    # Batch [2, 3, 4] was prepared while [1] still waited to be settled, and is not settled before it.
    assert log == ["prepare [1]", "settle [1] start", "prepare [2, 3, 4]"]
    first_settle_may_finish.set()
    await asyncio.sleep(0.01)
    assert log[3:] == ["settle [1] done", "settle [2, 3, 4] start", "settle [2, 3, 4] done"]
    await pipeline.close()


async def test_no_more_than_in_flight_batches_are_prepared_ahead_of_settling():
    prepared: list[list[int]] = []
    release = asyncio.Event()

    async def prepare(batch: list[int]) -> None:
        prepared.append(batch)

    async def settle(batch: list[int], _: None) -> None:
        await release.wait()

    pipeline = BatchPipeline(prepare, settle, fail, batch_size=1, in_flight=2)
    pipeline.start()
    for event in range(6):
        await pipeline.put(event)
        await asyncio.sleep(0.005)
    # One batch settling, two waiting to be settled, one prepared and held back; the rest not taken.
    assert prepared == [[0], [1], [2], [3]]
    release.set()
    await asyncio.sleep(0.02)
    assert prepared == [[event] for event in range(6)]
    await pipeline.close()


@pytest.mark.parametrize("stage", ["prepare", "settle"])
async def test_a_failure_in_either_stage_goes_to_on_failure(stage: str):
    failures: list[BaseException] = []

    def on_failure(error: BaseException) -> NoReturn:
        failures.append(error)
        raise asyncio.CancelledError  # end the stage's task, as the worker's exit would

    async def prepare(batch: list[int]) -> None:
        if stage == "prepare":
            raise KeyError("broken prepare")

    async def settle(batch: list[int], _: None) -> None:
        raise KeyError("broken settle")

    pipeline = BatchPipeline(prepare, settle, on_failure, batch_size=5, in_flight=1, grace=1)
    pipeline.start()
    await pipeline.put(1)
    await asyncio.sleep(0.01)
    assert [str(error) for error in failures] == [f"'broken {stage}'"]


async def test_close_settles_what_was_prepared_and_leaves_the_rest_in_the_inbox():
    settled: list[list[int]] = []
    prepare_may_finish = asyncio.Event()

    async def prepare(batch: list[int]) -> None:
        await prepare_may_finish.wait()

    async def settle(batch: list[int], _: None) -> None:
        settled.append(batch)

    pipeline = BatchPipeline(prepare, settle, fail, batch_size=2, in_flight=1)
    pipeline.start()
    await pipeline.put(1)
    await asyncio.sleep(0.01)
    await pipeline.put(2)
    await pipeline.put(3)
    closing = asyncio.ensure_future(pipeline.close())
    await asyncio.sleep(0.01)
    prepare_may_finish.set()
    await asyncio.wait_for(closing, 1)
    assert settled == [[1]], "the batch in hand is finished; events not yet taken stay unacknowledged"
    assert len(pipeline.inbox) == 2


async def test_close_of_an_idle_pipeline_returns_at_once():
    async def prepare(batch: list[int]) -> None: ...
    async def settle(batch: list[int], _: None) -> None: ...

    pipeline = BatchPipeline(prepare, settle, fail, batch_size=2, in_flight=1)
    pipeline.start()
    await asyncio.wait_for(pipeline.close(), 1)


async def test_while_a_batch_is_in_flight_the_next_waits_until_it_is_full_or_that_batch_is_settled():
    taken, settle_may_finish, prepare, settle = first_batch_held()
    pipeline = BatchPipeline(prepare, settle, fail, batch_size=4, in_flight=2)
    pipeline.start()
    await pipeline.put(0)
    await asyncio.sleep(0.01)
    for event in (1, 2):
        await pipeline.put(event)
    await asyncio.sleep(0.01)
    assert taken == [[0]], "two waiting events are no full batch: they wait for company while [0] is in flight"
    settle_may_finish.set()
    await asyncio.sleep(0.01)
    assert taken == [[0], [1, 2]], "once [0] is settled, what accumulated goes as one batch"
    for event in range(3, 7):
        await pipeline.put(event)
    await asyncio.sleep(0.01)
    assert taken[2:] == [[3, 4, 5, 6]]
    await pipeline.close()


async def test_batches_short_of_full_are_at_least_linger_apart_and_a_lone_event_after_a_pause_goes_at_once():
    taken: list[tuple[float, list[int]]] = []
    loop = asyncio.get_running_loop()

    async def prepare(batch: list[int]) -> None:
        taken.append((loop.time(), batch))

    async def settle(batch: list[int], _: None) -> None: ...

    pipeline = BatchPipeline(prepare, settle, fail, batch_size=100, in_flight=2, linger=0.2)
    pipeline.start()
    started = loop.time()
    await pipeline.put(0)
    await asyncio.sleep(0.01)
    assert [batch for _, batch in taken] == [[0]], "nothing taken before: the first event goes at once"
    for event in (1, 2, 3):
        await pipeline.put(event)
        await asyncio.sleep(0.01)
    assert len(taken) == 1, "the next short batch waits out the linger"
    await asyncio.sleep(0.25)
    assert [batch for _, batch in taken] == [[0], [1, 2, 3]]
    assert taken[1][0] - started >= 0.19
    await asyncio.sleep(0.25)
    await pipeline.put(4)
    await asyncio.sleep(0.01)
    assert [batch for _, batch in taken][-1] == [4], "after a quiet spell a lone event goes at once"
    await pipeline.close()


async def test_close_gives_up_on_a_settle_that_never_ends_and_reports_it():
    failures: list[BaseException] = []
    never = asyncio.Event()

    def on_failure(error: BaseException) -> NoReturn:
        failures.append(error)
        raise asyncio.CancelledError

    async def prepare(batch: list[int]) -> None: ...

    async def settle(batch: list[int], _: None) -> None:
        await never.wait()  # Kafka never confirms

    pipeline = BatchPipeline(prepare, settle, on_failure, batch_size=1, in_flight=1, grace=0.05)
    pipeline.start()
    for event in range(3):
        await pipeline.put(event)
        await asyncio.sleep(0.01)
    await asyncio.wait_for(pipeline.close(), 1)
    # Both stages had work in hand (a batch settling, the next one waiting for room): in the worker, the first
    # report ends the process.
    assert failures and all(isinstance(error, asyncio.CancelledError) for error in failures), failures


async def test_a_quiet_pipeline_takes_an_empty_batch_every_idle_spell_but_never_with_one_in_flight():
    taken, settle_may_finish, prepare, settle = first_batch_held()
    pipeline = BatchPipeline(prepare, settle, fail, batch_size=4, in_flight=2, idle_every=0.05)
    pipeline.start()
    await pipeline.put(0)
    await asyncio.sleep(0.2)
    assert taken == [[0]], "no empty batch while [0] waits to be settled"
    settle_may_finish.set()
    await asyncio.sleep(0.3)
    assert taken[0] == [0] and taken[1:] and all(batch == [] for batch in taken[1:])
    await pipeline.put(1)
    await asyncio.sleep(0.01)
    assert taken[-1] == [1], "an event goes as soon as it comes"
    await pipeline.close()
