"""Reading a stage's section of params.yaml into its pydantic model.

Every stage calls :func:`load_section` with the model of its section (each
library module owns its model, e.g. :class:`nasseg.search.runner.SearchConfig`).
The models hold every rule (types, choices, bounds, cross-field checks); this
module only reads the YAML, picks the section, applies the `--set key=value`
overrides and turns pydantic's errors into a :class:`ParamsError` that names the
file, the full dotted key and the offending value, so a typo in params.yaml
fails loudly instead of being silently ignored.

It imports nothing from the library, so that stages which run before the
library is built (build_ext) can use :func:`stage_parser`.
"""
from __future__ import annotations

import argparse
import sys
import copy
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    """A problem with params.yaml or a --set override; the message says where."""


def exit_status(exc: Exception) -> int:
    """A stage's exit status for ``exc``, called in its ``except`` clause.

    An error that is the user's to fix (:class:`nasseg.errors.InputError`: bad data, a
    missing or unreadable file, a folder in use; a ValueError such as a bad setting or
    genotype; a missing file) is printed as ``error: <message>`` and gives 2. Anything else
    is a bug and is raised again, so that its traceback names the file and line (exit 1).
    """
    from nasseg.errors import InputError

    if isinstance(exc, (InputError, ValueError, FileNotFoundError)):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    raise exc


def stage_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A stage's parser: first paragraph of its docstring as description, the rest as epilog."""
    head, _, rest = doc.strip().partition("\n\n")
    return argparse.ArgumentParser(prog=prog, description=head, epilog=rest or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_resumable_args(parser: argparse.ArgumentParser) -> None:
    """Add a resumable stage's `--state DIR` and `--no-progress` options."""
    parser.add_argument("--state", type=Path, default=None,
                        help="state root; each parameter set resumes from its own folder in it "
                             "(default: .state/<out name> beside --out)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the `--params FILE` and repeatable `--set key=value` options."""
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="parameters file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a parameter of this stage's section, relative to it "
                             "(--set num_archs=10) or as the full dotted key of params.yaml "
                             "(--set search.wacv.default.num_archs=10, as `dvc exp run -S` "
                             "spells it); the value is parsed as YAML; repeatable")


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


def _relative_key(key: str, section: str, model: type[BaseModel]) -> str:
    """`key` of an override relative to `section`; a key starting with `section.` is taken as full.

    A key that starts like the section's path but names another section (say
    `search.wacv.paper.num_archs` while the stage reads `search.wacv.default`) is an
    error, since it cannot mean a key of this stage.
    """
    prefix = f"{section}."
    if key.startswith(prefix):
        return key[len(prefix):]
    head = key.split(".", 1)[0]
    if head == section.split(".", 1)[0] and head not in model.model_fields:
        raise ParamsError(f"--set {key}: this stage reads section {section}; write the key "
                          f"relative to it or in full, starting with {prefix}")
    return key


def _apply_overrides(data: dict[str, Any], overrides: list[str], section: str,
                     model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply `KEY=VALUE` overrides to a copy of section `data`.

    Returns the new section and, for each overridden key (relative to the
    section), the override that set it, so errors can name it.
    """
    out = copy.deepcopy(data)
    origin: dict[str, str] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ParamsError(f"--set {item!r}: expected KEY=VALUE")
        key = _relative_key(key, section, model)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            # A sub-section absent from the file is created; validation afterwards
            # rejects keys the model does not know.
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join([section, *parts[: i + 1]])
                raise ParamsError(f"--set {item!r}: {where} is not a section")
        node[parts[-1]] = value
        origin[key] = item
    return out, origin


def load_section(path: Path, section: str, model: type[M], overrides: list[str] | None = None) -> M:
    """Read `section` (dotted, e.g. `search.wacv.default`) of `path`, validated as `model`."""
    path = Path(path)
    data: Any = read_yaml(path)
    for part in section.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ParamsError(f"{path}: missing section {section!r} (no key {part!r})")
        data = data[part]
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: section {section!r} must be a mapping")
    data, origin = _apply_overrides(data, overrides or [], section, model)
    return validate_section(model, data, path, section, origin)


def experiment_settings(args: argparse.Namespace, section: str, model: type[M], flags: dict[str, Any]) -> M:
    """A stage's settings: with ``args.experiment``, section ``<section>.<experiment>.<preset>`` of
    ``args.params`` (with ``args.overrides``), else the model's defaults; then the command-line
    ``flags`` that were given (not None), validated with the section, so that a flag obeys the
    same rules as params.yaml (an error names the flag)."""
    if args.experiment is not None:
        preset = read_yaml(args.params).get("preset", "default")
        settings = load_section(args.params, f"{section}.{args.experiment}.{preset}", model, args.overrides)
    elif args.overrides:
        raise ParamsError("--set needs --experiment (which section of params.yaml to read)")
    else:
        settings = model()
    given = {key: value for key, value in flags.items() if value is not None}
    try:
        return model.model_validate({**settings.model_dump(), **given})
    except ValidationError as exc:
        raise ParamsError("; ".join(f"--{str(err['loc'][0]).replace('_', '-')}: "
                                    f"{err['msg'].removeprefix('Value error, ')}"
                                    for err in exc.errors())) from None


def validate_section(model: type[M], data: Any, path: Path, section: str = "",
                     origin: dict[str, str] | None = None) -> M:
    """`model.model_validate(data)`, raising a :class:`ParamsError` that names file and keys.

    `section` is the dotted path of `data` in the file ("" for the whole file);
    `origin` maps keys (relative to it) to the `--set` overrides that set them.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, model, path, section, origin or {}) for err in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


def _describe(err: Any, model: type[BaseModel], path: Path, section: str,
              origin: dict[str, str]) -> str:
    """One line for one pydantic error: file, full dotted key, what is wrong, the value."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join([section, *loc] if section else loc)
    kind, value = err["type"], err["input"]
    if kind == "extra_forbidden":
        known = _known_keys(model, err["loc"][:-1])
        what = (f"unknown key (value: {value!r}); "
                + (f"the keys here are {', '.join(known)}" if known else "this section takes no keys"))
    elif kind == "missing" and isinstance(err["loc"][-1], int):
        what = "missing item: the list is too short"
    elif kind == "missing":
        what = "missing key (required: it has no default)"
    else:
        what = err["msg"].removeprefix("Value error, ")
        if not isinstance(value, dict):   # a whole section is no help to read
            what += f" (value: {value!r})"
    rel = ".".join(loc)
    sets = [item for k, item in origin.items()
            if rel == k or rel.startswith(f"{k}.") or k.startswith(f"{rel}.")]
    via = f" [from --set {', --set '.join(sets)}]" if sets else ""
    return f"{path}: {key}: {what}{via}" if key else f"{path}: {what}{via}"


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the model found at `loc` inside `model` (empty if none is)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:   # a scalar or a tuple of scalars: no model below
            return []
    tp = _unwrap(tp)
    return sorted(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def _unwrap(tp: Any) -> Any:
    """`X` for `X | None`; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp
