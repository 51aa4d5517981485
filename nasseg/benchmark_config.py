"""The latency benchmark's settings (section ``benchmark.<experiment>.<preset>`` of params.yaml).

A module of its own, with no torch import, so that validating params.yaml
(:mod:`stages.schema`) does not depend on the benchmark's code.
"""
from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from .config import Config, parse_size

__all__ = ["BenchmarkParams", "BACKEND_NAMES"]

#: The backends of :mod:`nasseg.backends`, by name (here, so that this module needs no torch).
Backend = Literal["eager", "channels_last", "compile", "onnxruntime", "openvino", "int8", "int8_openvino"]
BACKEND_NAMES: tuple[str, ...] = get_args(Backend)
#: The split of each dataset where int8's change in quality is measured by default: the
#: validation split (NYUD-v2 has none: its test split).
ACCURACY_SPLIT = {"voc": "val", "nyud": "test", "cityscapes": "val", "camvid": "val"}
#: The split of each dataset whose first images calibrate int8 by default: the training split
#: (VOC's is SBD's augmented train_aug).
CALIBRATION_SPLIT = {"voc": "train_aug", "nyud": "train", "cityscapes": "train", "camvid": "train"}


class BenchmarkParams(Config):
    """Settings of the benchmark stage (python -m stages.benchmark).

    ``sizes``: input sizes HEIGHTxWIDTH, batch 1; ``backends``: which of
    :data:`BACKEND_NAMES` (``eager`` always runs first: the others are checked
    against it); ``threads``: intra-op threads of PyTorch and ONNX Runtime;
    ``warmup`` untimed runs, then runs calibrated so that each of ``repeats``
    repeats lasts at least ``min_seconds`` (:func:`nasseg.latency.measure`);
    ``device``: cpu or cuda[:n]; ``calibration_images``: images of the dataset's
    ``calibration_split`` that calibrate int8 (per network); ``accuracy_split``: per dataset, the split on
    which int8's change in mIoU (RMSE for depth) is measured against float32, on at
    most ``accuracy_images`` images (null: all); ``rtol``: the float32 backends
    must match eager within ``rtol * max|eager output|``; ``int8_tolerance``: int8
    must match eager within this relative RMS error.
    """
    sizes: tuple[str, ...] = ("1024x2048", "512x1024", "360x480")
    backends: tuple[Backend, ...] = BACKEND_NAMES
    threads: int = Field(default=2, ge=1, le=512)
    warmup: int = Field(default=3, ge=0)
    min_seconds: float = Field(default=1.0, ge=0.0)
    repeats: int = Field(default=5, ge=1)
    device: str = "cpu"
    calibration_images: int = Field(default=16, ge=1)
    calibration_split: dict[str, str] = Field(default_factory=lambda: dict(CALIBRATION_SPLIT))
    accuracy_split: dict[str, str] = Field(default_factory=lambda: dict(ACCURACY_SPLIT))
    accuracy_images: int | None = Field(default=None, ge=1)
    rtol: float = Field(default=1e-3, gt=0.0)
    int8_tolerance: float = Field(default=0.3, gt=0.0)

    @field_validator("sizes")
    @classmethod
    def _check_sizes(cls, sizes: tuple[str, ...]) -> tuple[str, ...]:
        if not sizes:
            raise ValueError("sizes must hold at least one HEIGHTxWIDTH")
        for size in sizes:
            parse_size(size)
        return sizes

    @field_validator("backends")
    @classmethod
    def _check_backends(cls, backends: tuple[str, ...]) -> tuple[str, ...]:
        if "eager" not in backends:
            raise ValueError("backends must include eager: every other backend is checked against it")
        if len(set(backends)) != len(backends):
            raise ValueError(f"backends must not repeat, got {list(backends)}")
        return ("eager", *(b for b in backends if b != "eager"))

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: str) -> str:
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"device must be cpu or cuda[:n], got {device!r}")
        return device

    def size_pairs(self) -> list[tuple[int, int]]:
        return [parse_size(s) for s in self.sizes]
