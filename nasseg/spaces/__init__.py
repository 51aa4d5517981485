"""The search spaces, one module each, and their registry.

:mod:`.base` states the contract (:class:`~.base.SearchSpace`); :mod:`.cvpr` and
:mod:`.wacv` are the papers' spaces. They are imported here statically (the search
needs both, and the pipeline computes a stage's code dependencies from its static
imports). Everything else reaches a space through :func:`get_space`, never by
testing its name::

    space = get_space("wacv")
    genotype = space.decode(space.random_action(random.Random(0)))
    decoder = space.build_decoder(genotype, [24, 32], 19, agg_size=64, repeats=2, aux_cell=False)

A new space is a module with a :class:`SearchSpace` subclass and its genotype
dataclass, registered with :func:`register_space` (here for a built-in one).
Importing this package does not import torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator

from . import cvpr, wacv
from .base import Decision, Genotype, GenotypeError, SearchSpace

__all__ = ["SPACES", "Space", "SearchSpace", "Genotype", "GenotypeError", "Decision",
           "register_space", "get_space", "space_of"]

_SPACES: dict[str, SearchSpace[Any]] = {}
#: Registered spaces by name (read-only view).
SPACES: Mapping[str, SearchSpace[Any]] = MappingProxyType(_SPACES)


def register_space(space: SearchSpace[Any]) -> SearchSpace[Any]:
    """Add ``space`` to the registry and return it.

    Checks what the rest of the code relies on: a new name, a frozen-dataclass
    genotype type that names this space, and decisions at distinct non-negative
    positions with at least one value each.
    """
    name = space.name
    if name in _SPACES:
        raise ValueError(f"search space {name!r} is already registered")
    gtype = space.genotype_type
    params = getattr(gtype, "__dataclass_params__", None)   # set by @dataclass
    if not (isinstance(gtype, type) and issubclass(gtype, Genotype) and params is not None and params.frozen):
        raise ValueError(f"search space {name!r}: genotype type {gtype.__name__} must be a frozen "
                         "dataclass subclassing Genotype")
    if gtype.space != name:
        raise ValueError(f"search space {name!r}: its genotype type {gtype.__name__} names space "
                         f"{gtype.space!r}")
    positions = [d.position for d in space.decisions]
    if not positions or min(positions) < 0 or len(set(positions)) != len(positions):
        raise ValueError(f"search space {name!r}: decisions need distinct non-negative positions, "
                         f"got {positions}")
    if any(d.size < 1 for d in space.decisions):
        raise ValueError(f"search space {name!r}: every decision needs a size >= 1")
    _SPACES[name] = space
    return space


def get_space(name: str) -> SearchSpace[Any]:
    """The registered space called ``name``; GenotypeError lists the known ones."""
    try:
        return _SPACES[name]
    except (KeyError, TypeError):
        raise GenotypeError(f"unknown search space {name!r}; expected one of "
                            f"{', '.join(sorted(_SPACES))}") from None


def space_of(genotype: Genotype) -> SearchSpace[Any]:
    """The space of ``genotype``; TypeError for anything that is not a genotype."""
    if not isinstance(genotype, Genotype):
        raise TypeError(f"expected a genotype, got {type(genotype).__name__}")
    return get_space(genotype.space)


def _registered(name: str) -> str:
    get_space(name)
    return name


#: The name of a registered space; pydantic models (the search config) check it.
Space = Annotated[str, AfterValidator(_registered)]

register_space(cvpr.SPACE)
register_space(wacv.SPACE)
