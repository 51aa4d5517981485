"""safe_load: files that would run code when unpickled are refused before any of it runs."""
from __future__ import annotations

import collections
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from nasseg.models import MobileNetV2Encoder, load_original_weights
from nasseg.models.refinenet import RefineNetLW, load_refinenet_weights
from nasseg.models.weights import load_encoder_file
from nasseg.search import StrategyConfig, make_strategy
from nasseg.search.store import SearchStore
from nasseg.search.teachers import load_pipeline_checkpoint
from nasseg.serialization import CheckpointError, safe_load


class Payload:
    """Unpickling this creates ``marker``: what any code a malicious file names could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def poisoned_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that looks like a state dict, with the payload beside it."""
    torch.save({"state_dict": collections.OrderedDict(w=torch.zeros(2)), "extra": Payload(marker)}, path)
    return path


def test_the_payload_runs_code_when_unpickled_unsafely(tmp_path):
    """The file used below really would run code: loading it without weights_only does."""
    marker = tmp_path / "ran"
    torch.load(poisoned_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_safe_load_refuses_the_payload_naming_the_file(tmp_path):
    marker = tmp_path / "ran"
    path = poisoned_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as err:
        safe_load(path, "teacher checkpoint")
    msg = str(err.value)
    assert msg.startswith(f"{path}: refused to load this teacher checkpoint")
    assert "it asks for io.open" in msg and "could run code" in msg
    assert not marker.exists()


def _search_checkpoint(path: Path) -> object:
    return SearchStore(path.parent).load_checkpoint()


LOADERS: dict[str, Callable[[Path], object]] = {
    "search checkpoint": _search_checkpoint,
    "teacher checkpoint": load_pipeline_checkpoint,
    "RefineNet-LW weights": lambda p: load_refinenet_weights(RefineNetLW(21, layers=(1, 1, 1, 1)), p),
    "encoder weights": lambda p: load_encoder_file(MobileNetV2Encoder((1, 2)), p),
    "authors' checkpoint": lambda p: load_original_weights(MobileNetV2Encoder((1, 2)), p),
}


@pytest.mark.parametrize("what", sorted(LOADERS))
def test_every_loader_refuses_the_payload(what, tmp_path):
    marker = tmp_path / "ran"
    path = poisoned_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match=f"^{path}: refused"):
        LOADERS[what](path)
    assert not marker.exists()


def test_authors_training_checkpoints_load(tmp_path):
    """Their training scripts store best_val = np.mean(ious), a numpy float64, beside the
    state dict; files pickled under numpy 1.x name numpy.core.multiarray.scalar."""
    state = collections.OrderedDict(w=torch.arange(3.0))
    ckpt = {"segmenter": state, "epoch_start": 3, "best_val": np.float64(0.71), "iou": np.float32(0.5)}
    torch.save(ckpt, tmp_path / "numpy2.pt")
    buf = io.BytesIO()
    torch.save(ckpt, buf, _use_new_zipfile_serialization=False)
    numpy1 = buf.getvalue().replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    assert numpy1 != buf.getvalue()
    (tmp_path / "numpy1.pt").write_bytes(numpy1)
    for name in ("numpy2.pt", "numpy1.pt"):
        out = safe_load(tmp_path / name, "checkpoint")
        assert out["best_val"] == np.float64(0.71) and out["iou"] == np.float32(0.5)
        assert out["epoch_start"] == 3 and torch.equal(out["segmenter"]["w"], state["w"])


@pytest.mark.parametrize("name", ["ppo", "reinforce", "random", "evolution"])
def test_search_checkpoint_is_plain_data(name, tmp_path):
    """What the search saves (strategy state with its random streams) loads with weights_only."""
    s = make_strategy(StrategyConfig(name=name, population_size=4, tournament_size=2, buffer_size=4), "wacv", 0)
    for _ in range(6):
        s.observe(s.propose(), 0.5)
    pending = s.propose()
    store = SearchStore(tmp_path)
    store.save_checkpoint({"strategy": s.state_dict(), "pending": [pending.id], "elapsed_s": 1.5})
    loaded = store.load_checkpoint()
    resumed = make_strategy(s.config, "wacv", 0)
    resumed.load_state_dict(loaded["strategy"])
    assert resumed.propose().action == s.propose().action


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt: encoder weights file not found"):
        safe_load(tmp_path / "nope.pt", "encoder weights file")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(CheckpointError, match=r"cut.pt: cannot read this checkpoint as a torch file"):
        safe_load(tmp_path / "cut.pt", "checkpoint")
