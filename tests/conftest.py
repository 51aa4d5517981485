"""Fixtures and helpers shared by the test modules.

* ``one_torch_thread``: run a module's tests on one torch thread (steady timing on a
  shared 2-core machine), restoring the setting afterwards. No test module changes
  global torch settings at import time; they use this fixture instead.
* :func:`scratch_copy`: a copy of the checkout (the files git tracks or would track)
  in a fresh git repository, so pipeline tests never touch the repository's own
  outputs, locks or caches.
* :func:`run_cli`: run a command with this interpreter's tools (snakemake, dvc) first on
  the PATH; fail with its output when it fails.
* :class:`BaseFormatTest`: the bad-input cases every dataset format shares; each
  test_data_<dataset>.py runs them through a small subclass.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from nasseg.data import DataError, PrepareParams, prepare_dataset
from nasseg.data.formats import get_format

ROOT = Path(__file__).resolve().parents[1]
#: The folder holding this interpreter, so its snakemake and dvc are the ones run.
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Measured kernel choices (nasseg.search.kernels) go to a cache of the test session's
    own, also for the stages the tests run, never to the user's ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one torch thread, restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scratch_copy(dest: Path, exclude: Sequence[str] = ("tests/", "data/", "reports/", "benchmarks/"),
                 ) -> Path:
    """Copy the checkout's tracked and untracked-but-not-ignored files to `dest`; `git init` it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(tuple(exclude)):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    for key, value in (("user.name", "nasseg tests"), ("user.email", "tests@nasseg.invalid")):
        subprocess.run(["git", "config", key, value], cwd=dest, check=True)
    return dest


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a tool run from a test: this interpreter's bin first on PATH."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
                **extra)


def run_cli(cmd: Sequence[str], cwd: Path, ok: bool = True, timeout: float = 600,
            **env: str) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd`; with `ok`, assert that it succeeded and show its output if not."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


class BaseFormatTest(ABC):
    """The bad-input cases that every dataset format shares, written once.

    A subclass per format (``class TestCamVidFormat(BaseFormatTest)`` in
    test_data_camvid.py) sets :attr:`dataset`, :attr:`params` and the expected
    message fragments, and implements the hooks: :meth:`build` writes a small valid
    raw dataset; every other hook breaks it in one way and returns the file the
    error must name. Each case checks that `prepare` raises a DataError whose message
    starts with that file and goes on as the subclass says, and that it leaves no
    output folder behind. (Not collected by itself: its name does not start with
    "Test"; a subclass that misses a hook fails to instantiate.)
    """

    dataset: str
    params: PrepareParams
    #: a line of the format's layout text, which every error about the layout shows
    layout_line: str
    #: the first required path (relative to the raw folder) that check_layout reports
    first_required: str
    #: regular expressions for what each message says after the offending file
    corrupt_says: str = ": corrupt or truncated image"
    size_says: str
    outside_says: str
    empty_says: str

    @abstractmethod
    def build(self, raw: Path) -> None:
        """Write a small, valid raw dataset in the official layout at `raw`."""

    @abstractmethod
    def remove_layout_path(self, raw: Path) -> Path:
        """Delete a required file or folder of the layout; return it."""

    @abstractmethod
    def corrupt_image(self, raw: Path) -> Path:
        """Truncate or garble an input image (or the file holding the images); return it."""

    @abstractmethod
    def mismatch_sizes(self, raw: Path) -> Path:
        """Give a label (or depth map) another size than its image; return the file to name."""

    @abstractmethod
    def label_outside_classes(self, raw: Path) -> Path:
        """Write a label value outside the classes; return the file holding it."""

    @abstractmethod
    def empty_split(self, raw: Path) -> Path:
        """Leave one split without samples; return the file or folder that defines it."""

    @pytest.fixture
    def raw(self, tmp_path: Path) -> Path:
        """A valid raw dataset written by :meth:`build`."""
        raw = tmp_path / "raw"
        self.build(raw)
        return raw

    def check_error(self, raw: Path, tmp_path: Path, path: Path, says: str) -> str:
        """Prepare `raw`; assert a DataError starting with `path`, then `says`; return it."""
        out = tmp_path / "out"
        with pytest.raises(DataError) as err:
            prepare_dataset(self.dataset, raw, out, self.params)
        msg = str(err.value)
        assert re.match(re.escape(str(path)) + says, msg), msg
        assert not out.exists()
        return msg

    def test_missing_raw_folder(self, tmp_path: Path) -> None:
        raw = tmp_path / "nope"
        msg = self.check_error(raw, tmp_path, raw, ": raw data folder not found")
        assert self.layout_line in msg

    def test_raw_path_is_a_file(self, tmp_path: Path) -> None:
        raw = tmp_path / "raw.zip"
        raw.write_bytes(b"PK")
        msg = self.check_error(raw, tmp_path, raw, ": expected a folder, found a file")
        assert self.layout_line in msg

    def test_missing_layout_path(self, raw: Path, tmp_path: Path) -> None:
        get_format(self.dataset).check_layout(raw)
        missing = self.remove_layout_path(raw)
        msg = self.check_error(raw, tmp_path, missing, ": not found")
        assert self.layout_line in msg
        with pytest.raises(DataError) as err:  # what `synthesize --source real` runs
            get_format(self.dataset).check_layout(raw)
        assert str(err.value) == msg

    def test_dataset_one_folder_too_deep(self, tmp_path: Path) -> None:
        # A common mistake: linking the folder above the dataset.
        nested = tmp_path / "download"
        self.build(nested / self.dataset)
        msg = self.check_error(nested, tmp_path, nested / self.first_required, ": not found")
        assert self.layout_line in msg
        assert f"link or move {nested / self.dataset}" in msg

    def test_corrupt_image(self, raw: Path, tmp_path: Path) -> None:
        self.check_error(raw, tmp_path, self.corrupt_image(raw), self.corrupt_says)

    def test_image_and_label_of_different_sizes(self, raw: Path, tmp_path: Path) -> None:
        self.check_error(raw, tmp_path, self.mismatch_sizes(raw), self.size_says)

    def test_label_outside_the_classes(self, raw: Path, tmp_path: Path) -> None:
        self.check_error(raw, tmp_path, self.label_outside_classes(raw), self.outside_says)

    def test_empty_split(self, raw: Path, tmp_path: Path) -> None:
        self.check_error(raw, tmp_path, self.empty_split(raw), self.empty_says)


def set_dotted(mapping: dict, key: str, value: object) -> None:
    """Set dotted `key` (`search.wacv.default.num_archs`) in a nested mapping; None deletes it."""
    *parents, last = key.split(".")
    node = mapping
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value


def prepared_stand_in(tmp_path_factory, dataset: str, num_images: int, height: int, width: int,
                      params: PrepareParams | None = None) -> Path:
    """A synthetic `dataset` (seed 0) prepared in a fresh temporary folder; returns its prepared folder."""
    from nasseg.data import synthesize_dataset

    root = tmp_path_factory.mktemp(dataset)
    synthesize_dataset(dataset, root / "raw", num_images=num_images, seed=0, height=height, width=width)
    if params is None:
        prepare_dataset(dataset, root / "raw", root / "prepared")
    else:
        prepare_dataset(dataset, root / "raw", root / "prepared", params)
    return root / "prepared"


def constant_model(card, value: torch.Tensor) -> torch.nn.Module:
    """`card`'s network (a nasseg.checkpoint.ModelCard) whose classifier outputs `value`
    (one number per output channel) everywhere, in eval mode."""
    torch.manual_seed(0)
    model = card.build().eval()
    with torch.no_grad():
        model.decoder.conv_clf.weight.zero_()
        model.decoder.conv_clf.bias.copy_(value)
    return model
