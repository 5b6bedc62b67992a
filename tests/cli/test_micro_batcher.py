"""The twin endpoint's dynamic batching: concurrent callers share a forward pass, and each gets its own answer.

.venv/bin/python -m pytest tests/cli/test_micro_batcher.py
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from breedfilter.twin.micro_batcher import MicroBatcher

LONG = 3600.0  # a wait no test may reach: the batcher must stop waiting for other reasons


class Recorder:
    """A batch function that records its batches and can hold the first one until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[Any]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.started.set()
        self.release.wait()
        if "bad" in items:
            raise ValueError("bad item")
        return [f"answer:{item}" for item in items]


def _queued(batcher: MicroBatcher, count: int) -> None:
    while batcher._queue.qsize() < count:
        threading.Event().wait(0.001)


def test_each_caller_gets_its_own_answer_and_waiting_callers_share_batches() -> None:
    run = Recorder(hold_first=True)
    batcher = MicroBatcher(run, max_batch=4, max_wait_s=0.0)
    with ThreadPoolExecutor(max_workers=9) as pool:
        first = pool.submit(batcher, 0)
        run.started.wait()
        rest = [pool.submit(batcher, i) for i in range(1, 9)]
        _queued(batcher, 8)  # all queued behind the held batch
        run.release.set()
        answers = [first.result()] + [f.result() for f in rest]
    batcher.close()
    assert answers == [f"answer:{i}" for i in range(9)]
    assert [len(b) for b in run.batches] == [1, 4, 4]
    assert sorted(i for b in run.batches for i in b) == list(range(9))
    assert batcher.batch_sizes == {1: 1, 4: 2}


def test_a_lone_caller_does_not_wait_for_company() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=16, max_wait_s=LONG)
    with batcher.arriving():
        assert batcher("only") == "answer:only"
    assert batcher("direct") == "answer:direct"  # no one arriving either
    batcher.close()
    assert run.batches == [["only"], ["direct"]]


def test_a_forming_batch_waits_for_a_caller_still_preparing_its_item() -> None:
    run = Recorder(hold_first=True)
    batcher = MicroBatcher(run, max_batch=16, max_wait_s=LONG)
    prepared = threading.Event()
    entered = threading.Event()

    def slow_caller() -> str:
        with batcher.arriving():
            entered.set()
            prepared.wait()  # decoding its image
            return batcher("slow")

    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(batcher, "first")
        run.started.wait()  # the worker is busy with "first"
        slow = pool.submit(slow_caller)
        entered.wait()
        fast = pool.submit(batcher, "fast")
        _queued(batcher, 1)
        run.release.set()
        while not batcher._queue.empty():  # the worker has taken "fast" and waits for "slow"
            threading.Event().wait(0.001)
        prepared.set()
        assert (first.result(), fast.result(), slow.result()) == ("answer:first", "answer:fast", "answer:slow")
    batcher.close()
    assert run.batches == [["first"], ["fast", "slow"]]


def test_a_caller_that_never_hands_an_item_over_is_no_longer_waited_for() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=16, max_wait_s=LONG)
    with pytest.raises(KeyError), batcher.arriving():
        raise KeyError("refused while decoding")
    assert batcher._arriving == 0
    assert batcher("next") == "answer:next"
    batcher.close()


def test_one_failing_item_fails_alone() -> None:
    run = Recorder(hold_first=True)
    batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(batcher, "first")
        run.started.wait()
        others = {item: pool.submit(batcher, item) for item in ("a", "bad", "b")}
        _queued(batcher, 3)
        run.release.set()
        assert first.result() == "answer:first"
        assert others["a"].result() == "answer:a"
        assert others["b"].result() == "answer:b"
        with pytest.raises(ValueError, match="bad item"):
            others["bad"].result()
    batcher.close()
    assert [len(b) for b in run.batches] == [1, 3, 1, 1, 1]  # the failed batch, then each item alone


def test_a_batch_function_answering_the_wrong_count_is_retried_an_item_at_a_time() -> None:
    held = Recorder(hold_first=True)
    batcher = MicroBatcher(lambda items: held(items)[:1], max_batch=4, max_wait_s=0.0)
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(batcher, "first")
        held.started.wait()
        pair = [pool.submit(batcher, item) for item in ("x", "y")]
        _queued(batcher, 2)
        held.release.set()
        assert [first.result(), *(f.result() for f in pair)] == ["answer:first", "answer:x", "answer:y"]
    batcher.close()
    assert held.batches == [["first"], ["x", "y"], ["x"], ["y"]]


def test_closed_batchers_refuse_and_settings_are_checked() -> None:
    batcher = MicroBatcher(Recorder(), max_batch=2, max_wait_s=0.0)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher("late")
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0, max_wait_s=0.0)
