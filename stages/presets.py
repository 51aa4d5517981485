"""The models of the per-experiment presets that the search and rank stages validate.

Kept apart from :mod:`stages.schema`, which imports the model of every section of
params.yaml: the search and rank stages import only this module, so that editing another
stage's settings model (say :mod:`nasseg.benchmark_config`) does not make their code --
their computed dependencies -- out of date.
"""
from __future__ import annotations

from typing import Literal

from nasseg.ranking import RankConfig
from nasseg.search.runner import SearchConfig
from nasseg.spaces import get_space

__all__ = ["WACVSearch", "CVPRSearch", "SEARCH_PRESET", "WACVRank", "CVPRRank", "RANK_PRESET"]


class WACVSearch(SearchConfig):
    """A preset of `search.wacv`: a search of the WACV 2020 template space."""
    space: Literal["wacv"]


class CVPRSearch(SearchConfig):
    """A preset of `search.cvpr`: a search of the CVPR 2019 cell space."""
    space: Literal["cvpr"]


#: The model of a preset of `search.<experiment>`, whose `space` must be the experiment.
SEARCH_PRESET: dict[str, type[SearchConfig]] = {"wacv": WACVSearch, "cvpr": CVPRSearch}


#: The names of each space's published genotypes, as a Literal (so the JSON schema lists them).
WACVPublished = Literal[tuple(get_space("wacv").published)]   # type: ignore[valid-type]
CVPRPublished = Literal[tuple(get_space("cvpr").published)]   # type: ignore[valid-type]


class WACVRank(RankConfig):
    """A preset of `rank.wacv`: `published` is one of the WACV space's published genotypes."""
    published: WACVPublished = "arch0"


class CVPRRank(RankConfig):
    """A preset of `rank.cvpr`: `published` is one of the CVPR space's published genotypes."""
    published: CVPRPublished = "arch0"


#: The model of a preset of `rank.<experiment>`.
RANK_PRESET: dict[str, type[RankConfig]] = {"wacv": WACVRank, "cvpr": CVPRRank}
