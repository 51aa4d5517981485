"""Genotypes: the public functions, over the search-space registry (:mod:`nasseg.spaces`).

A genotype is a frozen dataclass of its space's module (:class:`CVPRGenotype`,
:class:`WACVGenotype`, re-exported here with their parts and op lists). Genotypes
are stored as JSON (``to_json`` / :func:`genotype_from_json`), whose ``space`` key
names the registered space, and never ``eval``'d. The authors wrote them as nested
lists of indices ("legacy" notation); :func:`genotype_from_legacy` and
``to_legacy`` convert both ways.
"""
from __future__ import annotations

import json
import random
from typing import Any

from .spaces import Space, get_space
from .spaces.base import Genotype, GenotypeError
from .spaces.cvpr import (CVPR_CELL_LAYERS, CVPR_DECODER_BLOCKS, CVPR_NUM_POOLS, CVPR_OPS, CellLayer,
                          Connection, CVPRGenotype)
from .spaces.wacv import (AGG_OPS, WACV_MAX_REPEATS, WACV_NUM_LAYERS, WACV_NUM_POOLS, WACV_NUM_TEMPLATES,
                          WACV_OPS, Template, TemplateLayer, WACVGenotype)

__all__ = [
    "Genotype", "GenotypeError", "Space", "genotype_from_dict", "genotype_from_json",
    "genotype_from_legacy", "published_genotype", "random_genotype", "load_genotype",
    "CVPR_OPS", "CVPR_NUM_POOLS", "CVPR_CELL_LAYERS", "CVPR_DECODER_BLOCKS", "CellLayer", "Connection",
    "CVPRGenotype", "WACV_OPS", "AGG_OPS", "WACV_NUM_POOLS", "WACV_NUM_TEMPLATES", "WACV_NUM_LAYERS",
    "WACV_MAX_REPEATS", "Template", "TemplateLayer", "WACVGenotype",
]


def genotype_from_dict(d: dict[str, Any]) -> Genotype:
    """Inverse of ``to_dict``; the ``space`` key selects the space."""
    if not isinstance(d, dict) or "space" not in d:
        raise GenotypeError(f"genotype JSON needs a 'space' key, got {d!r:.200}")
    space = get_space(d["space"])
    body = {k: v for k, v in d.items() if k != "space"}
    try:
        return space.genotype_type.from_dict(body)
    except (KeyError, TypeError) as exc:
        raise GenotypeError(f"malformed {space.name} genotype: {exc}") from exc


def genotype_from_json(text: str) -> Genotype:
    """Parse a genotype written by ``to_json``."""
    return genotype_from_dict(json.loads(text))


def genotype_from_legacy(space: Space, nested: list) -> Genotype:
    """Convert the authors' nested-list notation into a typed genotype."""
    return get_space(space).from_legacy(nested)


def random_genotype(space: Space, rng: random.Random) -> Genotype:
    """A uniformly random action of the space's decisions, decoded (see
    :meth:`~nasseg.spaces.base.SearchSpace.random_action`)."""
    return get_space(space).random_genotype(rng)


def published_genotype(space: Space, name: str) -> Genotype:
    """One of the papers' published genotypes: cvpr arch0-2, wacv arch0-1."""
    return get_space(space).published_genotype(name)


def load_genotype(file_or_name: str, space: Space | None = None) -> Genotype:
    """A genotype named on a command line: a published ``space/name`` (``wacv/arch0``)
    or a JSON file holding a genotype (``to_json``) or a ranking slot (its
    ``genotype`` key). ``space``, when given, must be the genotype's space.

    Errors (:class:`GenotypeError`, :class:`FileNotFoundError`) name the file or name.
    """
    from pathlib import Path

    path = Path(file_or_name)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: genotype file not found")
        try:
            data = json.loads(path.read_text())
            genotype = genotype_from_dict(data["genotype"] if isinstance(data, dict) and "genotype" in data
                                          else data)
        except (ValueError, GenotypeError) as exc:
            raise GenotypeError(f"{path}: not a genotype file ({exc}); expected the JSON that "
                                "Genotype.to_json or the rank stage writes") from exc
    else:
        parts = file_or_name.split("/")
        if len(parts) != 2:
            raise GenotypeError(f"{file_or_name!r}: neither a genotype file nor a published name "
                                "such as wacv/arch0 or cvpr/arch1")
        try:
            genotype = published_genotype(parts[0], parts[1])
        except KeyError as exc:
            raise GenotypeError(str(exc).strip("'\"")) from exc
    from .spaces import space_of
    if space is not None and space_of(genotype).name != space:
        raise GenotypeError(f"{file_or_name}: a {space_of(genotype).name} genotype, expected one of the "
                            f"{space} space")
    return genotype
