"""The evaluate stage's settings (section ``evaluate.<experiment>.<preset>`` of params.yaml).

A module of its own, with no torch import, so that reading or validating
params.yaml (:mod:`stages.schema`) does not depend on the scoring code: a change to
:mod:`nasseg.evaluation` does not make DVC re-run the stages that only validate
parameters.
"""
from __future__ import annotations

from pydantic import Field, field_validator

from .config import Config

__all__ = ["EvaluateParams"]


class EvaluateParams(Config):
    """Test-time settings of the evaluate stage (section ``evaluate.<experiment>.<preset>``).

    ``flip``: also score the mirrored image and average; ``scales``: input scales whose
    outputs are averaged (``[1.0]``: single scale). The papers used neither
    (single scale, no flip); ``workers``: data-loading processes.
    """
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    workers: int = Field(default=1, ge=0, le=64)

    @field_validator("scales")
    @classmethod
    def _check_scales(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        if not scales:
            raise ValueError("scales must hold at least one scale (1.0: single scale)")
        bad = [s for s in scales if not 0.1 <= s <= 4.0]
        if bad:
            raise ValueError(f"scales must lie in [0.1, 4], got {bad}")
        if len(set(scales)) != len(scales):
            raise ValueError(f"scales must not repeat, got {list(scales)}")
        return scales
