"""Write a small synthetic dataset in a dataset's official layout and formats.

`prepare` then reads it through exactly the code path used for the real
download. A marker file (SYNTHETIC.json) at the root records the parameters;
it also tells apart synthetic data (which may be regenerated) from a user's
real download (which is never overwritten).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import Config
from ..io import atomic_directory, atomic_write_json
from .errors import DataError
from .formats import get_format
from .prepare import SYNTHETIC_MARKER, read_synthetic_marker

log = logging.getLogger(__name__)

Source = Literal["synthetic", "real"]


class DataSources(Config):
    """Where each dataset's raw data comes from (section `data.source`)."""

    voc: Source = "synthetic"
    nyud: Source = "synthetic"
    cityscapes: Source = "synthetic"
    camvid: Source = "synthetic"


class DataParams(Config):
    """Section `data` of params.yaml."""

    source: DataSources = Field(default_factory=DataSources)


class SynthSize(Config):
    """Size of one synthetic dataset."""

    num_images: int = Field(ge=1)
    height: int = Field(ge=16)
    width: int = Field(ge=16)


class SynthesizeParams(Config):
    """Section `synthesize` of params.yaml."""

    seed: int
    voc: SynthSize
    nyud: SynthSize
    cityscapes: SynthSize
    camvid: SynthSize


def check_not_real(out: Path, dataset: str = "<dataset>") -> None:
    """Refuse to replace a folder that synthesize did not write (a real download)."""
    fix = (f"If it is your download, set data.source.{dataset}: real in params.yaml "
           "(or pass --source real); otherwise move it away")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DataError(f"{out}: is a symbolic link or a file, so not synthetic data written by "
                        f"synthesize; refusing to replace it. {fix}")
    if out.is_dir() and any(out.iterdir()) and read_synthetic_marker(out) is None:
        raise DataError(f"{out}: holds data that synthesize did not write (no "
                        f"{SYNTHETIC_MARKER}); refusing to replace it. {fix}")


def synthesize_dataset(dataset: str, out: Path, *, num_images: int, seed: int, height: int,
                       width: int) -> dict:
    """Write `num_images` synthetic images of `dataset` at `out`; return the marker content."""
    fmt = get_format(dataset)
    out = Path(out)
    check_not_real(out, dataset)
    marker = {"dataset": dataset, "seed": seed, "num_images": num_images, "height": height,
              "width": width}
    with atomic_directory(out) as tmp:
        try:
            splits = fmt.write_synthetic(tmp, num_images=num_images, seed=seed, height=height,
                                         width=width)
        except ValueError as exc:
            raise DataError(f"{out}: cannot synthesize {dataset}: {exc}") from exc
        marker["splits"] = splits
        atomic_write_json(tmp / SYNTHETIC_MARKER, marker)
    log.info("synthesized %s at %s: %s", dataset, out,
             ", ".join(f"{k} {v}" for k, v in splits.items()))
    return marker


def synth_size(params: SynthesizeParams, dataset: str) -> SynthSize:
    return getattr(params, dataset)


__all__ = ["DataParams", "DataSources", "SynthSize", "SynthesizeParams", "check_not_real",
           "synthesize_dataset", "synth_size"]
