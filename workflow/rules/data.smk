# Data: synthesize_<dataset> writes synthetic stand-ins to data/raw/<dataset> in the
# official layout; prepare_<dataset> converts data/raw/<dataset> to data/prepared/<dataset>.
# The same commands as the stages of the same names in dvc.yaml.
#
# With `data.source.<dataset>: real` in params.yaml there is no synthesize rule for that
# dataset: data/raw/<dataset> is your download (placed or linked there) and Snakemake
# treats it as a source. A folder at data/raw/<dataset> that synthesize did not write
# (no SYNTHETIC.json) is never deleted: while the source is still `synthetic`, the
# workflow refuses to load (Snakemake removes a rule's output folder before re-running it).
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

DATASETS = ["voc", "nyud", "cityscapes", "camvid"]
DATA_SOURCE = config["data"]["source"]
SYNTHETIC_MARKER = "SYNTHETIC.json"


def _data_code(*names):
    return ["nasseg/data/" + n for n in names]


def _check_synthetic_target(ds):
    raw = Path(f"data/raw/{ds}")
    if not (raw.exists() or raw.is_symlink()):
        return
    if raw.is_symlink() or not (raw / SYNTHETIC_MARKER).is_file() and any(raw.iterdir()):
        raise WorkflowError(
            f"{raw} holds data that the synthesize stage did not write (no {SYNTHETIC_MARKER}), "
            f"but params.yaml has data.source.{ds}: synthetic, so Snakemake could replace it. "
            f"If it is your download, set data.source.{ds}: real in params.yaml; otherwise "
            "move it away.")


for _ds in DATASETS:
    _mat = ["matfile.py"] if _ds in ("voc", "nyud") else []
    if DATA_SOURCE[_ds] == "synthetic":
        _check_synthetic_target(_ds)

        rule:
            name: f"synthesize_{_ds}"
            input:
                "stages/synthesize.py",
                _data_code("synthesize.py", "synthetic.py", f"formats/{_ds}.py", "classes.py",
                           "imageio.py", *_mat),
            output:
                directory(f"data/raw/{_ds}"),
            params:
                dataset=_ds,
                seed=config["synthesize"]["seed"],
                size=config["synthesize"][_ds],
            log:
                f"logs/synthesize_{_ds}.log",
            shell:
                "python -m stages.synthesize --dataset {params.dataset} --out {output} > {log} 2>&1"

    elif not Path(f"data/raw/{_ds}").exists():
        print(f"note: data.source.{_ds} is 'real' but data/raw/{_ds} does not exist; place or "
              "link your download there (README: 'Using the real datasets')", file=sys.stderr)

    rule:
        name: f"prepare_{_ds}"
        input:
            raw=f"data/raw/{_ds}",
            code=["stages/prepare.py"] + _data_code("prepare.py", f"formats/{_ds}.py",
                                                    "formats/common.py", "classes.py",
                                                    "imageio.py", *_mat),
        output:
            f"data/prepared/{_ds}/meta.json",
        params:
            dataset=_ds,
            out=f"data/prepared/{_ds}",
            prepare=config["prepare"],
        log:
            f"logs/prepare_{_ds}.log",
        shell:
            "python -m stages.prepare --dataset {params.dataset} --raw {input.raw} "
            "--out {params.out} > {log} 2>&1"
