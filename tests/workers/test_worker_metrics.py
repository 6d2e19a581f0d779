"""The worker's step clock and the reaper's pass record (the families themselves are checked on a running stack in
tests/e2e/test_e2e_embedded.py)."""

from __future__ import annotations

from workers import metrics, reaper_metrics
from workers.reaper import ReapReport


def count(registry, name, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_a_report_that_jumps_several_steps_counts_each_and_stages_without_steps_count_none(monkeypatch):
    clock = iter([10.0, 10.3, 10.5, 11.0, 11.1])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    before = count(metrics.REGISTRY, "llada_denoise_step_seconds_count", kind="EDIT", stage="denoise")
    steps = metrics.StepClock("EDIT")
    steps.report("tokenize", 1)   # not a denoising stage
    steps.report("denoise", 1)    # the first report of a stage has nothing to measure against
    steps.report("denoise", 4)    # three steps in 0.2 s (an engine poll)
    steps.report("denoise", 4)    # no step advanced
    steps.report("decode", 1)
    after = count(metrics.REGISTRY, "llada_denoise_step_seconds_count", kind="EDIT", stage="denoise")
    assert after - before == 3


def test_a_pass_counts_each_action_and_a_failed_pass_counts_as_an_error():
    before = {a: count(reaper_metrics.REGISTRY, "llada_reaper_jobs_total", action=a) for a in reaper_metrics.ACTIONS}
    errors = count(reaper_metrics.REGISTRY, "llada_reaper_passes_total", outcome="error")
    reaper_metrics.record_pass(ReapReport(requeued=["a", "b"], dead=["c"]), 0.01)
    reaper_metrics.record_pass(None, 0.02)
    after = {a: count(reaper_metrics.REGISTRY, "llada_reaper_jobs_total", action=a) for a in reaper_metrics.ACTIONS}
    assert {a: after[a] - before[a] for a in after} == {"requeued": 2, "dead": 1, "resent": 0, "expired": 0,
                                                         "swept": 0}
    assert count(reaper_metrics.REGISTRY, "llada_reaper_passes_total", outcome="error") == errors + 1
