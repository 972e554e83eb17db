"""LoadQueue and load_priority: cache misses jump background loads; most recently used next."""

from __future__ import annotations

from kserve_mesh.core.ids import ModelId
from kserve_mesh.core.loadqueue import REQUEST_WAITING_BOOST_MS, LoadQueue, load_priority

M = ModelId
NOW = 1_700_000_000_000


def drain(queue: LoadQueue) -> list[str]:
    out = []
    while (model := queue.pop()) is not None:
        out.append(model)
    return out


def test_priority_of_a_waiting_request_is_now_plus_two_hours() -> None:
    assert load_priority(last_used_ms=5, now_ms=NOW, request_waiting=True) == NOW + 2 * 3_600_000
    assert REQUEST_WAITING_BOOST_MS == 7_200_000
    assert load_priority(last_used_ms=5, now_ms=NOW, request_waiting=False) == 5


def test_a_request_waiting_beats_any_background_load() -> None:
    queue = LoadQueue()
    # A background load of a model used "in the future" (clock skew between instances) still loses
    # unless it is more than two hours ahead.
    queue.push(M("bg-recent"), load_priority(last_used_ms=NOW + 60_000, now_ms=NOW, request_waiting=False))
    queue.push(M("bg-old"), load_priority(last_used_ms=NOW - 3_600_000, now_ms=NOW, request_waiting=False))
    queue.push(M("miss"), load_priority(last_used_ms=0, now_ms=NOW, request_waiting=True))
    assert drain(queue) == ["miss", "bg-recent", "bg-old"]


def test_background_loads_go_most_recently_used_first() -> None:
    queue = LoadQueue()
    for model, used in [("b", 200), ("a", 100), ("c", 300)]:
        queue.push(M(model), used)
    assert drain(queue) == ["c", "b", "a"]


def test_equal_priorities_go_in_arrival_order() -> None:
    queue = LoadQueue()
    for model in ["x", "y", "z"]:
        queue.push(M(model), 7)
    queue.push(M("x"), 7)  # pushing again at the same priority keeps its place
    assert drain(queue) == ["x", "y", "z"]


def test_push_raises_priority_but_never_lowers_it() -> None:
    queue = LoadQueue()
    queue.push(M("a"), 100)
    queue.push(M("b"), 200)
    queue.push(M("a"), 50)  # lower: ignored
    assert queue.priority_of(M("a")) == 100
    queue.push(M("a"), 300)  # a request now waits for it
    assert queue.priority_of(M("a")) == 300
    assert len(queue) == 2
    assert drain(queue) == ["a", "b"]
    assert len(queue) == 0 and queue.pop() is None


def test_raised_item_does_not_come_out_twice() -> None:
    queue = LoadQueue()
    queue.push(M("a"), 1)
    queue.push(M("a"), 2)
    queue.push(M("a"), 3)
    assert drain(queue) == ["a"]


def test_remove_takes_a_queued_load_out() -> None:
    queue = LoadQueue()
    queue.push(M("a"), 3)
    queue.push(M("b"), 2)
    assert M("a") in queue
    assert queue.remove(M("a"))
    assert not queue.remove(M("a"))
    assert M("a") not in queue and queue.priority_of(M("a")) is None
    assert len(queue) == 1
    assert drain(queue) == ["b"]


def test_a_removed_model_can_be_queued_again() -> None:
    queue = LoadQueue()
    queue.push(M("a"), 10)
    queue.remove(M("a"))
    queue.push(M("a"), 1)
    queue.push(M("b"), 5)
    assert queue.priority_of(M("a")) == 1
    assert drain(queue) == ["b", "a"]


def test_popped_model_can_be_queued_again() -> None:
    queue = LoadQueue()
    queue.push(M("a"), 10)
    assert queue.pop() == "a"
    queue.push(M("a"), 1)
    assert drain(queue) == ["a"]


def test_empty_queue() -> None:
    queue = LoadQueue()
    assert len(queue) == 0 and queue.pop() is None and not queue.remove(M("a"))
