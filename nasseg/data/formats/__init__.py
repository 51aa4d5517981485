"""One module per dataset: its official layout, the converter's plan, and the
writer of synthetic stand-ins in that same layout (so `prepare` reads synthetic
and real data through one code path). :mod:`.base` states the contract
(:class:`~.base.DatasetFormat`) that each of them fulfils.

This package is also their registry: :data:`FORMATS` names each dataset's
module and :func:`get_format` imports it on demand. Nothing else in `nasseg`
imports a format module, so the static import closure of a stage's code holds
only the format it runs (an edit of `voc.py` does not touch the CityScapes
stages)::

    fmt = get_format("cityscapes")
    fmt.check_layout(raw)
    plan = fmt.plan(raw)
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import cast

from ..errors import DataError
from .base import DatasetFormat

#: Dataset name -> the module that implements :class:`DatasetFormat` for it.
FORMATS: Mapping[str, str] = MappingProxyType({
    "voc": "nasseg.data.formats.voc",
    "nyud": "nasseg.data.formats.nyud",
    "cityscapes": "nasseg.data.formats.cityscapes",
    "camvid": "nasseg.data.formats.camvid",
})


def get_format(name: str) -> DatasetFormat:
    """The format module of dataset `name`, imported now if it was not yet.

    Raises DataError for a name not in :data:`FORMATS`, listing the known ones.
    """
    if name not in FORMATS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(FORMATS)}")
    return cast(DatasetFormat, importlib.import_module(FORMATS[name]))


__all__ = ["FORMATS", "DatasetFormat", "get_format"]
