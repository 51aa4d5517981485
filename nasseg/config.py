"""The base class of every configuration read from params.yaml.

Each library module owns the model of its own params.yaml section (for example
:class:`nasseg.search.config.ProxyConfig`); they all derive from :class:`Config`
so that they behave alike: an unknown key is an error (a typo must never be
silently ignored), and a config is immutable once validated (derive a changed
copy with ``config.model_copy(update={...})``, which does not re-validate).

Values are validated in pydantic's lax mode, which params.yaml needs: YAML
lists become tuples, and YAML 1.1 reads ``3e-3`` (no dot) as a string, which
float fields accept.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    """A frozen, validated section of params.yaml that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: The smallest input side of the networks (their strided layers need at least this much):
#: the ONNX export's and the benchmark's sizes are checked against it.
MIN_SIDE = 32


def parse_size(text: str) -> tuple[int, int]:
    """``"360x480"`` -> (360, 480): an input size, height by width, each at least :data:`MIN_SIDE`."""
    parts = str(text).lower().split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r}: expected an input size HEIGHTxWIDTH such as 360x480") from None
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"{text!r}: the input must be at least {MIN_SIDE}x{MIN_SIDE}")
    return h, w
