# Data: the guard that protects a user's download. The data rules themselves
# (synthesize_<dataset>, prepare_<dataset>) come from the stage table like every other.
#
# With `data.source.<dataset>: real` in params.yaml there is no synthesize rule for that
# dataset: data/raw/<dataset> is your download (placed or linked there) and Snakemake
# treats it as a source. A folder at data/raw/<dataset> that synthesize did not write
# (no SYNTHETIC.json) is never deleted: while the source is still `synthetic`, the
# workflow refuses to load (Snakemake removes a rule's output folder before re-running it).
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

DATA_SOURCE = config["data"]["source"]
SYNTHETIC_MARKER = "SYNTHETIC.json"


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


for _ds in pipeline.DATASETS:
    if DATA_SOURCE[_ds] == "synthetic":
        _check_synthetic_target(_ds)
    elif not Path(f"data/raw/{_ds}").exists():
        print(f"note: data.source.{_ds} is 'real' but data/raw/{_ds} does not exist; place or "
              "link your download there (README: 'Using the real datasets')", file=sys.stderr)
