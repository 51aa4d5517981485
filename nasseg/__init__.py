"""nasseg: NAS of compact semantic segmentation models (CVPR 2019 / WACV 2020).

The public API used by the pipeline and by users::

    g = nasseg.published_genotype("wacv", "arch0")       # or genotype_from_legacy / _json
    model = nasseg.build_segmenter(g, num_classes=19)    # agg_size=64, repeats=2
    nasseg.load_original_weights(model, "authors.ckpt")     # read with weights_only=True

The names below are loaded on first use (PEP 562), so that importing a light
submodule (``nasseg.io``, ``nasseg.data.classes``) does not load torch and the
models; ``from nasseg import build_segmenter`` works as usual.
"""
from __future__ import annotations

from typing import Any

_GENOTYPES = ("CVPRGenotype", "WACVGenotype", "Genotype", "GenotypeError", "genotype_from_legacy",
              "genotype_from_json", "genotype_from_dict", "published_genotype", "random_genotype")
_MODELS = ("build_segmenter", "count_parameters", "load_original_weights", "export_original_weights",
           "load_imagenet_encoder", "WeightsError", "PretrainedWeightsUnavailable")

__all__ = [*_GENOTYPES, *_MODELS]


def __getattr__(name: str) -> Any:
    if name in _GENOTYPES:
        from . import genotypes
        return getattr(genotypes, name)
    if name in _MODELS:
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module 'nasseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
