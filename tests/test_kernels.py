"""Kernel options measured on the machine at hand (nasseg.search.kernels)."""
import json

import pytest
import torch

from nasseg.search import kernels
from nasseg.search.config import ProxyConfig, StageOneConfig, StageTwoConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ProxyConfig(agg_size=8, repeats=1, stage1=StageOneConfig(batch_size=2, crop_size=32),
                   stage2=StageTwoConfig(batch_size=2, crop_size=32))


class Calls(list):
    times: dict[str, float]


@pytest.fixture
def fake_measure(monkeypatch, tmp_path):
    """Count measurements and return fixed times: NCHW ('contiguous') is the faster."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = Calls()

    def measure(space, config, device, num_classes, subgrids=False):
        calls.append((space, config.agg_size))
        return dict(times)
    times = {"channels_last": 2.0, "contiguous": 1.0}
    calls.times = times
    monkeypatch.setattr(kernels, "measure", measure)
    return calls


@pytest.mark.parametrize("setting, expected", [(True, torch.channels_last),
                                               (False, torch.contiguous_format)])
def test_a_forced_format_is_not_measured(fake_measure, setting, expected):
    config = TINY.model_copy(update={"channels_last": setting})
    assert kernels.choose("wacv", config, "cpu", 19) == kernels.KernelChoice(expected, "plain")
    assert fake_measure == []


def test_auto_measures_once_per_machine_and_setting_and_keeps_the_faster(fake_measure, tmp_path):
    assert TINY.channels_last == "auto"
    assert kernels.choose("wacv", TINY, "cpu", 19).memory_format == torch.contiguous_format
    assert kernels.choose("wacv", TINY, "cpu", 19).memory_format == torch.contiguous_format
    assert fake_measure == [("wacv", 8)]                      # cached
    kernels.choose("wacv", TINY.model_copy(update={"agg_size": 16}), "cpu", 19)
    kernels.choose("cvpr", TINY, "cpu", 21)
    assert fake_measure == [("wacv", 8), ("wacv", 16), ("cvpr", 8)]
    cache = json.loads((tmp_path / "nasseg" / "kernels.json").read_text())
    assert len(cache) == 3
    (key, entry), *_ = cache.items()
    assert entry == {"choice": "contiguous", "seconds": {"channels_last": 2.0, "contiguous": 1.0}}
    assert json.loads(key)["cpu"] == kernels.machine()["cpu"] and "torch" in json.loads(key)


def test_auto_decides_the_depthwise_kernel_per_shape(fake_measure):
    choice = kernels.choose("cvpr", TINY, "cpu", 19)
    assert isinstance(choice.depthwise, kernels.DepthwiseChooser)


@pytest.mark.parametrize("space", ["wacv", "cvpr"])
def test_measure_times_both_formats(space, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    config = TINY.model_copy(update={"aux_cell": space == "cvpr", "aux_weight": 0.15})
    chooser = kernels.DepthwiseChooser("cpu")
    seconds = kernels.measure(space, config, torch.device("cpu"), 5, chooser)
    assert set(seconds) == {"channels_last", "contiguous"} and min(seconds.values()) > 0
    # both spaces' first published networks have dilated depthwise convolutions in the
    # decoder, asked about in both formats in train mode (with gradients); the encoder's
    # depthwise convolutions are asked about both with gradients (stage 2) and without
    # (stage 1's features)
    train = {(key.split()[0], key.split()[-2]) for key in chooser.table if key.endswith(" train")}
    assert {fmt for fmt, _ in train} == {"nhwc", "nchw"} and {d for _, d in train} > {"d1"}
    assert any(key.endswith(" s2 d1 inference") for key in chooser.table)


def _dilated(channels: int = 4):
    from nasseg.models.ops import DepthwiseConv2d
    return DepthwiseConv2d(channels, channels, 3, padding=2, dilation=2, groups=channels, bias=False)


def test_the_depthwise_chooser_follows_the_timings_and_caches_each_shape(tmp_path, monkeypatch):
    from nasseg.models.ops import use_depthwise_kernel

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    timed = []

    def fake_time(conv, x, grad, options):
        timed.append((tuple(x.shape), grad, options))
        # sub-grids faster on the larger map only; this project's loops never
        return {"plain": 1.0, "subgrids": 0.5 if x.shape[-1] >= 16 else 2.0, "direct": 3.0}
    monkeypatch.setattr(kernels, "time_depthwise", fake_time)
    used = []
    conv = _dilated()
    monkeypatch.setattr(type(conv), "on_subgrids", lambda self, x: used.append(x.shape[-1]) or
                        torch.nn.Conv2d.forward(self, x))
    chooser = kernels.DepthwiseChooser("cpu")
    assert use_depthwise_kernel(torch.nn.Sequential(conv), chooser) == 1
    for size in (8, 16, 8, 16):
        conv(torch.randn(2, 4, size, size))
    with torch.no_grad():
        conv(torch.randn(2, 4, 16, 16))
    conv(torch.empty(2, 4, 16, 16, device="meta"))   # shapes only (FLOP counting): not timed
    assert used == [16, 16, 16]
    both = ("plain", "subgrids")   # NCHW float32: not this project's loops
    assert timed == [((2, 4, 8, 8), True, both), ((2, 4, 16, 16), True, both), ((2, 4, 16, 16), False, both)]
    # NHWC: all three are timed
    conv(torch.randn(2, 4, 16, 16).contiguous(memory_format=torch.channels_last))
    assert timed[-1] == ((2, 4, 16, 16), True, ("plain", "subgrids", "direct")) and used == [16] * 4
    # a new chooser (another worker, a later run) reads the answers from disk
    again = kernels.DepthwiseChooser("cpu")
    assert again.table == chooser.table and len(again.table) == 4
    conv.kernel = again
    conv(torch.randn(2, 4, 8, 8))
    assert len(timed) == 4
    saved = json.loads((tmp_path / "nasseg" / "depthwise.json").read_text())
    assert list(saved) == [again.machine] and "nchw 2x4x16x16 float32 k3 s1 d2 inference" in saved[again.machine]
    # one candidate only (a float64 NCHW undilated convolution): nothing to time
    from nasseg.models.ops import DepthwiseConv2d
    plain = DepthwiseConv2d(4, 4, 3, padding=1, groups=4, bias=False).double()
    plain.kernel = again
    plain(torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert len(timed) == 4


def test_the_chooser_picks_this_projects_loops_where_they_are_faster(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernels, "time_depthwise",
                        lambda conv, x, grad, options: {k: {"direct": 0.1}.get(k, 1.0) for k in options})
    calls = []
    conv = _dilated()
    monkeypatch.setattr(type(conv), "direct", lambda self, x: calls.append(x.shape) or torch.nn.Conv2d.forward(self, x))
    conv.kernel = kernels.DepthwiseChooser("cpu")
    conv(torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last))
    conv(torch.randn(2, 4, 8, 8))   # NCHW: the loops cannot run it
    assert calls == [(2, 4, 8, 8)]


def test_timing_depthwise_kernels_leaves_the_model_and_the_random_stream_alone():
    conv = _dilated()
    leaf = torch.randn(2, 4, 12, 12, requires_grad=True)
    x = leaf.contiguous(memory_format=torch.channels_last)
    state = torch.get_rng_state()
    weight = conv.weight.detach().clone()
    seconds = kernels.time_depthwise(conv, x, True, conv.kernels_for(x))
    assert set(seconds) == {"plain", "subgrids", "direct"} and min(seconds.values()) > 0
    assert torch.equal(torch.get_rng_state(), state)
    assert conv.weight.grad is None and leaf.grad is None and torch.equal(conv.weight, weight)


def test_a_limited_instruction_set_is_its_own_machine(tmp_path):
    """Held to AVX2 (as on an AVX2-only CPU), torch's kernels report it, and the
    measured choices are cached under another key than the unlimited machine's."""
    import os
    import subprocess
    import sys

    if "avx2" not in kernels.machine()["vector"]:
        pytest.skip("the CPU has no AVX2")
    code = "import json; from nasseg.runtime import machine; print(json.dumps(machine()))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    limited = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                        capture_output=True, text=True).stdout)
    assert limited["aten_capability"] == "AVX2"
    assert limited["isa_limits"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert limited != kernels.machine() and limited["cpu"] == kernels.machine()["cpu"]


def test_the_lstm_loops_run_the_best_instruction_set_the_cpu_has():
    from nasseg.search import _lstm

    vector = kernels.machine()["vector"]
    expected = "avx512f" if "avx512f" in vector else "avx2" if "avx2" in vector else "baseline"
    assert expected in _lstm.instruction_set()
