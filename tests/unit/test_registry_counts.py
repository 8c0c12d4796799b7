"""The registry keeps calls-by-state as it moves calls, equal to counting them (what /metrics read)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mediasrv.calls.registry import Call, CallRegistry, CallState, Direction


def counted(registry: CallRegistry) -> dict[CallState, int]:
    out = {state: 0 for state in CallState if state is not CallState.ENDED}
    for call in registry.all():
        if call.state is not CallState.ENDED:
            out[call.state] += 1
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "ringing", "answered", "ended"]), st.integers(0, 30)), max_size=200))
def test_kept_counts_equal_a_count_after_any_sequence(steps):
    registry = CallRegistry(keep_ended=5)  # ended calls are also forgotten along the way
    calls: list[Call] = []
    for op, k in steps:
        if op == "add" or not calls:
            call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"sip-{len(calls)}")
            calls.append(call)
            registry.add(call)
            continue
        call = calls[k % len(calls)]
        if op == "ringing":
            registry.ringing(call)
        elif op == "answered":
            registry.answered(call)
        else:
            registry.ended(call, "normal_clearing", "caller")
        assert registry.live_state_counts() == counted(registry)
    assert registry.live_state_counts() == counted(registry)


def test_a_thousand_calls_through_their_lives():
    registry = CallRegistry()
    calls = [Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"c{i}") for i in range(1000)]
    for call in calls:
        registry.add(call)
    rng = random.Random(7)
    for call in rng.sample(calls, 600):
        registry.ringing(call)
    for call in rng.sample(calls, 500):
        registry.answered(call)
    for call in rng.sample(calls, 300):
        registry.ended(call, "normal_clearing", "caller")
    assert registry.live_state_counts() == counted(registry)
    assert sum(registry.live_state_counts().values()) == 700 == registry.active_count
