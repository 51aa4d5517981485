"""Typed, validated access to sections of params.yaml.

Every stage calls :func:`load_section` with a frozen dataclass describing its
section. Unknown keys, missing keys and wrong types are reported with the file
and the dotted key, so a typo in params.yaml fails loudly instead of being
silently ignored. `--set key=value` overrides (YAML-parsed values) are applied
before validation, the same way in every stage.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """A problem with params.yaml or a --set override; the message says where."""


def stage_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A stage's parser: first paragraph of its docstring as description, the rest as epilog."""
    head, _, rest = doc.strip().partition("\n\n")
    return argparse.ArgumentParser(prog=prog, description=head, epilog=rest or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the `--params FILE` and repeatable `--set key=value` options."""
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="parameters file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a parameter of this stage's section, e.g. "
                             "--set num_archs=10 (value parsed as YAML); repeatable")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: parameters file not found; pass --params FILE "
                          "or run from the repository root")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(section: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    """Return a copy of `section` with `key.sub=value` overrides applied."""
    out = _deepcopy(section)
    for item in overrides:
        if "=" not in item:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            # A sub-section absent from the file is created; the typed
            # validation afterwards rejects keys the stage does not know.
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"--set {item!r}: {where}.{part} is not a section")
        node[parts[-1]] = value
    return out


def load_section(path: Path, section: str, cls: type[T], overrides: list[str] | None = None) -> T:
    """Read `section` (dotted, e.g. `search.wacv`) of `path` into dataclass `cls`."""
    data: Any = read_yaml(path)
    for part in section.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ParamsError(f"{path}: missing section {section!r} (no key {part!r})")
        data = data[part]
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: section {section!r} must be a mapping")
    data = apply_overrides(data, overrides or [], section)
    return from_dict(cls, data, f"{path}:{section}")


def from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from `data`, checking keys and types recursively."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"expected some of {', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{where}: missing key {name!r}")
            continue
        kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ParamsError(f"{where}: {exc}") from exc


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ParamsError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return {k: _coerce(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads `3e-3` (no dot) as a string; accept what float() accepts.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    return value


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj
