"""The demo's estimate of the time left: reference step times scaled by this machine's speed so far."""

from __future__ import annotations

from infra.demo import chain as demo


def test_clock_scales_the_steps_left_by_the_speed_so_far(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(demo.time, "monotonic", lambda: now[0])
    steps = ["synth", "featurize", "compare", "tag", "queries"]
    clock = demo.Clock(steps)
    reference = demo.STEP_SECONDS
    now[0] += 2 * reference["synth"]  # this machine runs at half the reference speed
    left = 2 * sum(reference[name] for name in steps[1:])
    assert clock.finished("synth") == f"demo: {2 * reference['synth']:.0f} s so far, about {left:.0f} s left"
    now[0] += reference["featurize"] + reference["compare"]  # then at the reference speed
    clock.finished("featurize")
    message = clock.finished("compare")
    done = reference["synth"] + reference["featurize"] + reference["compare"]
    elapsed = 2 * reference["synth"] + reference["featurize"] + reference["compare"]
    expected_left = elapsed / done * (reference["tag"] + reference["queries"])
    assert message == f"demo: {elapsed:.0f} s so far, about {expected_left:.0f} s left"
    now[0] += 10
    clock.finished("tag")
    assert clock.finished("queries").endswith("about 0 s left")
