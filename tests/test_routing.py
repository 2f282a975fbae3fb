"""The router's decisions, without Ray: room, first looks first, shedding without flapping."""

from __future__ import annotations

from tracklens.pipeline.config import RouterConfig
from tracklens.pipeline.service.routing import RouteDecider


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_crops_go_to_the_mllm_while_it_has_room_and_first_looks_go_first():
    decider = RouteDecider(RouterConfig(), capacity=3, clock=Clock())
    decider.done(0, ["a", "b"])  # the MLLM has answered for tracks a and b already
    assert decider.plan(["a", "b", "c", "d", "e"]) == [False, False, True, True, True]  # first looks take the room
    decider.done(3, ["c", "d", "e"])
    assert decider.plan(["a", "f", "b"]) == [True, True, True]  # room for refreshes too, first look first
    assert decider.in_flight == 3
    assert decider.plan(["f"]) == [False]  # no room left
    decider.done(3, ["c", "d"])
    assert decider.in_flight == 0 and decider.plan(["f"]) == [True]


def test_no_mllm_means_the_specialist_for_everything():
    decider = RouteDecider(RouterConfig(max_in_flight=8), capacity=0)
    assert decider.plan(["a", "b"]) == [False, False] and decider.in_flight == 0


def test_back_pressure_sheds_only_the_crops_it_refused():
    """Regression: a full MLLM queue made the router send every crop to the specialist for a
    cooldown, so the pool idled at 40% of its capacity under a 5x overload and its autoscaler
    never saw the demand. Back-pressure is per crop now: the next crops try the MLLM again."""
    decider = RouteDecider(RouterConfig(cooldown_s=2.0), capacity=4, clock=Clock())
    decider.plan(["a"])
    decider.done(1, [], trouble="backpressure")
    assert not decider.shedding and decider.plan(["b", "c"]) == [True, True]
    assert decider.troubles == {"backpressure": 1}


def test_trouble_sheds_for_a_cooldown_that_doubles_while_it_lasts_and_resets_after_a_clean_batch():
    clock = Clock()
    decider = RouteDecider(RouterConfig(cooldown_s=2.0, max_cooldown_s=5.0), capacity=4, clock=clock)
    decider.plan(["a"])
    decider.done(1, [], trouble="failure")
    assert decider.shedding and decider.plan(["b", "c"]) == [False, False]
    clock.now = 1.9
    assert decider.plan(["b"]) == [False]
    clock.now = 2.0  # cooldown over: the MLLM is tried again
    assert decider.plan(["b"]) == [True]
    decider.done(1, [], trouble="overrun")  # still in trouble: the next cooldown is 4 s
    clock.now = 5.9
    assert decider.shedding
    clock.now = 6.0
    assert decider.plan(["c"]) == [True]
    decider.done(1, ["c"])  # a clean batch: back to the first cooldown
    decider.plan(["d"])
    decider.done(1, [], trouble="failure")
    clock.now = 8.0
    assert not decider.shedding
    assert decider.troubles == {"overrun": 1, "failure": 2}


def test_the_memory_of_answered_tracks_is_bounded():
    decider = RouteDecider(RouterConfig(first_looks_tracked=2), capacity=1)
    decider.done(0, ["a", "b", "c"])
    assert decider.plan(["a", "c"]) == [True, False]  # a was forgotten: a first look again
