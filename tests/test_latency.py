"""nasseg.latency: eval mode enforced, runs calibrated to the minimum time, statistics."""
from __future__ import annotations

import pytest
import torch

import nasseg
from nasseg import latency
from nasseg.latency import LatencyStats, check_eval_mode, environment, measure


class FakeClock:
    """A perf_counter that only moves when the timed function runs (by `step` seconds a call)."""

    def __init__(self, step: float) -> None:
        self.now, self.step, self.calls = 0.0, step, 0

    def perf_counter(self) -> float:
        return self.now

    def run(self) -> None:
        self.calls += 1
        self.now += self.step


def test_a_network_in_training_mode_is_refused_naming_its_modules():
    model = nasseg.build_segmenter(nasseg.published_genotype("wacv", "arch0"), 5)
    with pytest.raises(ValueError, match=r"training mode \(Segmenter, encoder, .* more\); call model.eval"):
        check_eval_mode(model)
    model.eval()
    model.decoder.pre_clf.train()   # one module left training is enough to refuse
    with pytest.raises(ValueError, match=r"decoder\.pre_clf"):
        check_eval_mode(model)
    check_eval_mode(model.eval())


def test_runs_are_calibrated_to_the_minimum_time(monkeypatch):
    clock = FakeClock(step=0.01)
    monkeypatch.setattr(latency, "time", clock)
    stats = measure(clock.run, warmup=3, min_seconds=0.05, repeats=4)
    # 1 run (0.01 s) is too short; the next try aims at 1.2 x 0.05 s: 6 runs (0.06 s) suffice
    assert stats.runs == 6
    assert clock.calls == 3 + 1 + 6 + 4 * 6
    assert stats == LatencyStats(median=pytest.approx(0.01), mean=pytest.approx(0.01), std=pytest.approx(0.0),
                                 p90=pytest.approx(0.01), min=pytest.approx(0.01), runs=6, repeats=4)


def test_statistics_over_repeats(monkeypatch):
    # repeat k (after one calibration batch of 1 run at min_seconds 0) takes 0.01 * (k + 1) s
    durations = iter([0.05, 0.01, 0.04, 0.02, 0.05, 0.03])
    clock = FakeClock(step=0.0)

    def run() -> None:
        clock.now += next(durations)

    monkeypatch.setattr(latency, "time", clock)
    stats = measure(run, warmup=0, min_seconds=0.0, repeats=5)
    assert stats.runs == 1
    assert (stats.min, stats.median, stats.p90) == pytest.approx((0.01, 0.03, 0.05))
    assert stats.mean == pytest.approx(0.03)
    assert stats.std == pytest.approx(0.0141421356)


def test_bad_settings_and_real_timing():
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure(lambda: None, repeats=0)
    model = nasseg.build_segmenter(nasseg.published_genotype("cvpr", "arch0"), 3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        stats = measure(lambda: model(x), warmup=1, min_seconds=0.0, repeats=2)
    assert stats.runs == 1 and 0 < stats.min <= stats.median <= stats.p90
    info = environment("cpu")
    assert {"cpu", "vector", "torch", "threads", "python", "device"} <= set(info)
