"""The model of the whole params.yaml, and the Snakemake config schema generated from it.

    python -m stages.schema --validate            # check params.yaml as a whole
    python -m stages.schema --write-schema workflow/schemas/params.schema.json
    python -m stages.schema --check workflow/schemas/params.schema.json

Each stage validates only its own section (stages/params.py); :class:`Params`
puts the sections together, one field per section, so that the whole file can
be checked at once: every preset of every experiment, and the top-level
`preset` naming one that each experiment has. Adding a stage's section is one
line here. The JSON schema that the Snakefile validates its config with is
generated from this model (`--write-schema`), so the rules live in one place,
the library's models; `--check` (and a test) fails when the committed file is
stale.

The schema carries the types, choices, bounds, required and unknown keys, and
each preset's `space`; the rules written as validators are not in it: that
`preset` names an existing preset (JSON Schema cannot compare a value with the
keys of another object), ppo_minibatch_size <= buffer_size, tournament_size <=
population_size, and a checkpoint or refinenet_lw152 teacher's `path`. The
stages enforce those when they read their section. The Snakefile validates with
`set_default=False`: filling the models' defaults into Snakemake's `config`
would change the rules' params (and so re-run them) without any change to
params.yaml; the stages apply the defaults themselves.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import model_validator
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from nasseg.config import Config
from nasseg.data.prepare import PrepareParams
from nasseg.data.synthesize import DataParams, SynthesizeParams
from nasseg.benchmark_config import BenchmarkParams
from nasseg.evaluation_config import EvaluateParams
from nasseg.training.config import TrainConfig

# the presets' models, re-exported (the search and rank stages import them from .presets alone)
from .presets import RANK_PRESET, SEARCH_PRESET, CVPRRank, CVPRSearch, WACVRank, WACVSearch  # noqa: F401
from .params import DEFAULT_PARAMS, ParamsError, read_yaml, stage_parser, validate_section

SCHEMA_FILE = Path("workflow/schemas/params.schema.json")
#: A number as text: YAML 1.1 (PyYAML, Snakemake) reads `3e-3` (no dot) as a string, which
#: the models' float fields accept, so the schema accepts it too.
NUMBER_STRING = r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"


class BuildExtParams(Config):
    """Section `build_ext`: no parameters (the section exists for DVC and Snakemake)."""


class SearchParams(Config):
    """Section `search`: per experiment, one search config per preset name."""
    wacv: dict[str, WACVSearch]
    cvpr: dict[str, CVPRSearch]


class RankParams(Config):
    """Section `rank`: per experiment, one ranking config per preset name."""
    wacv: dict[str, WACVRank]
    cvpr: dict[str, CVPRRank]


#: The sections whose presets are per experiment (`<section>.<experiment>.<preset>`); `preset`
#: must name a preset of each.
PER_EXPERIMENT = ("search", "rank", "evaluate", "benchmark")


class EvaluateSection(Config):
    """Section `evaluate`: per experiment, the evaluate stage's test-time settings per preset."""
    wacv: dict[str, EvaluateParams]
    cvpr: dict[str, EvaluateParams]


class BenchmarkSection(Config):
    """Section `benchmark`: per experiment, the latency benchmark's settings per preset."""
    wacv: dict[str, BenchmarkParams]
    cvpr: dict[str, BenchmarkParams]


class WACVTrain(Config):
    """Section `train.wacv`: per dataset, one training config per preset name."""
    cityscapes: dict[str, TrainConfig]
    camvid: dict[str, TrainConfig]


class CVPRTrain(Config):
    """Section `train.cvpr`: per dataset, one training config per preset name."""
    voc: dict[str, TrainConfig]
    nyud: dict[str, TrainConfig]


class TrainParams(Config):
    """Section `train`: full training, per experiment and dataset (stages/train.py)."""
    wacv: WACVTrain
    cvpr: CVPRTrain


class Params(Config):
    """The whole params.yaml: one field per section (a new stage's section is one more line)."""
    # which preset of each experiment (search.<experiment>.<preset>) the pipeline runs
    preset: str
    build_ext: BuildExtParams
    data: DataParams
    synthesize: SynthesizeParams
    prepare: PrepareParams
    search: SearchParams
    rank: RankParams
    evaluate: EvaluateSection
    train: TrainParams
    benchmark: BenchmarkSection

    @model_validator(mode="after")
    def _preset_exists(self) -> Params:
        sections = {f"{section}.{e}": getattr(getattr(self, section), e)
                    for section in PER_EXPERIMENT for e in type(getattr(self, section)).model_fields}
        for e in TrainParams.model_fields:
            experiment = getattr(self.train, e)
            sections.update({f"train.{e}.{d}": getattr(experiment, d) for d in type(experiment).model_fields})
        for where, presets in sections.items():
            if self.preset not in presets:
                raise ValueError(
                    f"preset {self.preset!r} is not a preset of {where} (it has "
                    f"{', '.join(sorted(presets))}); add {where}.{self.preset} or "
                    "set preset to a name every experiment has")
        return self


class ParamsJsonSchema(GenerateJsonSchema):
    """pydantic's JSON schema without titles, and with float fields accepting number strings."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return {"anyOf": [super().float_schema(schema), {"type": "string", "pattern": NUMBER_STRING}]}


def json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12, which Snakemake's validate requires) of params.yaml."""
    schema = Params.model_json_schema(schema_generator=ParamsJsonSchema)
    schema.pop("title", None)
    return {"$schema": ParamsJsonSchema.schema_dialect,
            "$comment": "Generated from the models by python -m stages.schema --write-schema "
                        f"{SCHEMA_FILE}; do not edit by hand.",
            **schema}


def schema_text() -> str:
    """The schema as written to the file: stable key order, trailing newline."""
    return json.dumps(json_schema(), indent=2) + "\n"


def load_params(path: Path) -> Params:
    """Validate the whole of `path` as :class:`Params`; errors name the file and the keys."""
    return validate_section(Params, read_yaml(path), Path(path))


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.schema", __doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--validate", action="store_true",
                        help="validate the whole parameters file (--params)")
    action.add_argument("--write-schema", type=Path, metavar="FILE",
                        help=f"write the JSON schema of params.yaml (e.g. {SCHEMA_FILE})")
    action.add_argument("--check", type=Path, metavar="FILE",
                        help="fail when FILE differs from the schema --write-schema would write")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS,
                        help="parameters file for --validate (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.validate:
        try:
            params = load_params(args.params)
        except ParamsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.params}: valid (preset {params.preset})")
    elif args.write_schema:
        args.write_schema.write_text(schema_text())
        print(f"wrote {args.write_schema}")
    else:
        current = args.check.read_text() if args.check.is_file() else None
        if current != schema_text():
            print(f"error: {args.check} is {'stale' if current else 'missing'}; regenerate it with "
                  f"python -m stages.schema --write-schema {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check}: up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
