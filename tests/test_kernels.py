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

    def measure(space, config, device, num_classes):
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
    assert kernels.choose("wacv", config, "cpu", 19) == kernels.KernelChoice(expected, False)
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


def test_the_fastest_option_wins_subgrids_included(fake_measure):
    fake_measure.times.update({"channels_last+space_to_batch": 0.5, "contiguous+space_to_batch": 0.7})
    assert kernels.choose("cvpr", TINY, "cpu", 19) == kernels.KernelChoice(torch.channels_last, True)


@pytest.mark.parametrize("space", ["wacv", "cvpr"])
def test_measure_times_both_formats_with_and_without_subgrids(space):
    config = TINY.model_copy(update={"aux_cell": space == "cvpr", "aux_weight": 0.15})
    seconds = kernels.measure(space, config, torch.device("cpu"), 5)
    # both spaces' first published networks have dilated depthwise convolutions
    assert set(seconds) == {"channels_last", "contiguous", "channels_last+space_to_batch",
                            "contiguous+space_to_batch"} and min(seconds.values()) > 0


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
