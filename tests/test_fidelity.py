"""The `paper` presets held to the authors' settings at HEAD, value by value.

The table is ``../shared/spec/authors-hyperparameters.md`` (DrSleep/nas-segm-pytorch at
5de0c5c): the CVPR search is ``src/utils/default_args.py``, the WACV search
``examples/search/search_wacv.sh`` over those defaults. Each row below is one cell of that
table; a later edit of params.yaml that drifts from it fails here with the key named.
The presets are read as a user gets them: after ``python workflow/pipeline.py --preset
paper`` on a copy of params.yaml.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from stages.params import load_section
from stages.presets import SEARCH_PRESET
from nasseg.training import TrainConfig

sys.path.insert(0, str(ROOT / "workflow"))
import pipeline  # noqa: E402  (workflow/pipeline.py)

# (key under search.<experiment>.<preset>, CVPR value, WACV value, where the authors set it)
AUTHORS_SEARCH: list[tuple[str, Any, Any, str]] = [
    ("proxy.omit_classes", (0,), (), "VAL_OMIT_CLASSES / a bare --val-omit-classes"),
    ("proxy.stage1.dec_weight_decay", 1e-5, 1e-5, "DEC_WD[0]"),
    ("proxy.stage2.dec_weight_decay", 1e-5, 1e-5, "DEC_WD[1]"),
    ("proxy.stage2.enc_weight_decay", 1e-5, 1e-5, "ENC_WD[1]"),
    ("proxy.stage2.enc_optim", "sgd", "adam", "ENC_OPTIM / --enc-optim"),
    ("proxy.stage2.enc_lr", 1e-3, 5e-4, "ENC_LR[1] / --enc-lr"),
    ("proxy.stage2.enc_momentum", 0.9, None, "ENC_MOM (SGD only)"),
    ("proxy.stage1.lr", 3e-3, 7e-3, "DEC_LR[0] / --dec-lr"),
    ("proxy.stage2.dec_lr", 3e-3, 2e-3, "DEC_LR[1] / --dec-lr"),
    ("proxy.stage1.batch_size", 64, 32, "BATCH_SIZE[0] / --batch-size"),
    ("proxy.stage2.batch_size", 32, 32, "BATCH_SIZE[1] / --batch-size"),
    # WACV: RandomCrop(321) of create_loaders rounds to 320 for the cached stage-1 crops;
    # set_config(crop_size=321) in main_search.py assigns 321 unrounded before stage 2
    ("proxy.stage1.crop_size", 256, 320, "CROP_SIZE[0] / --crop-size, RandomCrop"),
    ("proxy.stage2.crop_size", 350, 321, "CROP_SIZE[1] / --crop-size, set_config"),
    ("proxy.stage1.resize_side", 300, 1024, "RESIZE_SIDE[0] / --resize-side"),
    ("proxy.stage2.resize_side", 400, 1024, "RESIZE_SIDE[1] / --resize-side"),
    ("data.resize_longer", False, True, "--resize-longer-side"),
    ("data.scale_range", (0.7, 1.4), (0.7, 1.4), "LOW_SCALE, HIGH_SCALE"),
    ("data.transforms", "authors", "authors", "cv2.INTER_CUBIC / INTER_NEAREST (datasets.py)"),
    ("data.meta_train_fraction", 0.9, 0.9, "META_TRAIN_PRCT"),
    ("proxy.stage1.num_images", 4000, 1000, "N_TASK0 / --n-task0"),
    ("proxy.stage1.epochs", 5, 5, "NUM_SEGM_EPOCHS[0] / --num-segm-epochs"),
    ("proxy.stage2.epochs", 1, 5, "NUM_SEGM_EPOCHS[1] / --num-segm-epochs"),
    ("proxy.stage1.val_every", 5, 5, "VAL_EVERY[0] / --val-every"),
    ("proxy.stage2.val_every", 1, 1, "VAL_EVERY[1] / --val-every"),
    ("proxy.val_batch_size", 64, 10, "VAL_BATCH_SIZE / --val-batch-size"),
    ("data.val_crop_size", 400, 512, "VAL_CROP_SIZE / --val-crop-size"),
    ("data.val_resize_side", 400, 1024, "VAL_RESIZE_SIDE / --val-resize-side"),
    ("proxy.val_drop_last", True, True, "DataLoader(drop_last=True) in loaders.py"),
    ("proxy.aux_weight", 0.15, 0.0, "DEC_AUX_WEIGHT / --dec-aux-weight 0"),
    ("proxy.aux_cell", True, False, "AUX_CELL (the WACV space has none)"),
    ("proxy.distillation.weight", 0.3, None, "KD_COEFF"),
    ("proxy.agg_size", 48, 48, "AGG_CELL_SIZE"),
    ("proxy.repeats", 1, 1, "SEP_REPEATS"),
    ("proxy.stage1.grad_clip", 3.0, 3.0, "DEC_GRAD_CLIP"),
    ("proxy.stage2.grad_clip", 3.0, 3.0, "ENC_GRAD_CLIP, DEC_GRAD_CLIP"),
    ("strategy.name", "ppo", "ppo", "CTRL_AGENT"),
    ("strategy.lr", 1e-4, 1e-4, "CTRL_LR / --ctrl-lr"),
    ("strategy.baseline_decay", 0.95, 0.95, "CTRL_BASELINE_DECAY"),
    ("seed", 9314, 9314, "RANDOM_SEED"),
    ("proxy.amp", False, False, "fp32 throughout"),
]


@pytest.fixture(scope="module")
def paper_params(tmp_path_factory) -> Path:
    """A copy of params.yaml switched to the paper preset by the pipeline's own command."""
    path = tmp_path_factory.mktemp("paper") / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    pipeline.set_preset(path, "paper")
    assert yaml.safe_load(path.read_text())["preset"] == "paper"
    return path


def _get(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


@pytest.mark.parametrize("experiment", ["cvpr", "wacv"])
@pytest.mark.parametrize("key,cvpr,wacv,source", AUTHORS_SEARCH, ids=[row[0] for row in AUTHORS_SEARCH])
def test_paper_search_preset_is_the_authors(paper_params: Path, experiment: str, key: str, cvpr: Any,
                                            wacv: Any, source: str) -> None:
    preset = yaml.safe_load(paper_params.read_text())["preset"]
    config = load_section(paper_params, f"search.{experiment}.{preset}", SEARCH_PRESET[experiment])
    want = cvpr if experiment == "cvpr" else wacv
    if want is None:
        pytest.skip(f"{key} does not apply to {experiment}")
    got = _get(config, key)
    if isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-12), f"search.{experiment}.paper.{key}: {source}"
    else:
        assert got == want, f"search.{experiment}.paper.{key}: {source}"


def test_wacv_distils_nothing_and_cvpr_distils_in_stage_one(paper_params: Path) -> None:
    wacv = load_section(paper_params, "search.wacv.paper", SEARCH_PRESET["wacv"])
    cvpr = load_section(paper_params, "search.cvpr.paper", SEARCH_PRESET["cvpr"])
    assert wacv.proxy.distillation.teacher == "none"          # --do-kd ''
    assert cvpr.proxy.distillation.teacher != "none"          # DO_KD = True
    assert cvpr.proxy.distillation.stages == (1,)             # the teacher's outputs cached for task 0


def test_stand_ins_score_the_same_classes_as_the_paper() -> None:
    """default and ci follow the paper's reward classes: WACV all of them, CVPR without background."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for preset in ("default", "ci", "paper"):
        assert params["search"]["wacv"][preset]["proxy"]["omit_classes"] == []
        assert params["search"]["cvpr"][preset]["proxy"]["omit_classes"] == [0]


def test_cvpr_full_training_uses_the_auxiliary_cells(paper_params: Path) -> None:
    """The CVPR abstract: auxiliary cells supervise training and are omitted at evaluation."""
    for dataset in ("voc", "nyud"):
        cfg = load_section(paper_params, f"train.cvpr.{dataset}.paper", TrainConfig)
        assert cfg.aux_cell and cfg.aux_weight == pytest.approx(0.15)
        assert cfg.dec_weight_decay == pytest.approx(1e-5)   # DEC_WD; DenseTorch wd_dec for NYUD


# names of the authors' files at HEAD (default_args.py, search_wacv.sh) that comments may cite
_AUTHORS_NAMES = {
    "BATCH_SIZE", "META_TRAIN_PRCT", "NORMALISE_PARAMS", "NUM_CLASSES", "NUM_WORKERS", "N_TASK0",
    "TRAIN_DIR", "TRAIN_LIST", "VAL_BATCH_SIZE", "VAL_CROP_SIZE", "VAL_DIR", "VAL_LIST",
    "VAL_OMIT_CLASSES", "VAL_RESIZE_SIDE", "CROP_SIZE", "HIGH_SCALE", "LOW_SCALE", "RESIZE_SIDE",
    "ENC_GRAD_CLIP", "ENC_LR", "ENC_MOM", "ENC_OPTIM", "ENC_WD", "DEC_AUX_WEIGHT", "DEC_GRAD_CLIP",
    "DEC_LR", "DEC_MOM", "DEC_OPTIM", "DEC_WD", "DO_KD", "DO_POLYAK", "FREEZE_BN", "KD_COEFF",
    "NUM_EPOCHS", "NUM_SEGM_EPOCHS", "RANDOM_SEED", "VAL_EVERY", "CKPT_PATH", "PRINT_EVERY",
    "SNAPSHOT_DIR", "SUMMARY_DIR", "CELL_MAX_REPEAT", "CELL_MAX_STRIDE", "CELL_NUM_LAYERS",
    "CTRL_AGENT", "CTRL_BASELINE_DECAY", "CTRL_LR", "CTRL_VERSION", "DEC_NUM_CELLS",
    "LSTM_HIDDEN_SIZE", "LSTM_NUM_LAYERS", "NUM_AGG_OPS", "NUM_OPS", "AGG_CELL_SIZE", "AUX_CELL",
    "SEP_REPEATS",
    # the released models' notebooks (examples/inference/*.ipynb)
    "AGG_SIZE", "REPEATS",
    # cv2's interpolation flags, as src/data/datasets.py passes them
    "INTER_CUBIC", "INTER_NEAREST",
}

#: names that older copies of default_args.py had and HEAD has not
_GONE = ("WD_DEC", "WD_ENC", "MOM_ENC", "MOM_DEC", "LR_ENC", "LR_DEC", "OPTIM_ENC", "OPTIM_DEC",
         "SHORTER_SIDE")


def test_comments_cite_only_names_that_exist_at_head() -> None:
    """A comment naming a default_args.py constant names one that exists at HEAD (not the
    WD_DEC, MOM_ENC, SHORTER_SIDE of older copies)."""
    text = (ROOT / "params.yaml").read_text()
    cited = set()
    for line in text.splitlines():
        if "#" in line:
            cited |= set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", line.split("#", 1)[1]))
    unknown = sorted(cited - _AUTHORS_NAMES)
    assert not unknown, f"params.yaml comments cite names not in the authors' files at HEAD: {unknown}"


def test_every_paper_training_value_has_a_source() -> None:
    """Each value of a train paper preset carries a comment: a source, or "not stated" / "ours"."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    start = lines.index("train:")
    missing, in_paper = [], False
    for number, line in enumerate(lines[start:], start + 1):
        if line.startswith("# benchmark"):
            break
        if re.match(r"^      paper:", line):
            in_paper = True
        elif re.match(r"^      (default|ci):|^    [a-z]+:$|^  [a-z]+:$", line):
            in_paper = False
        elif in_paper and re.match(r"^        [a-z_0-9]+: ", line) and "#" not in line:
            missing.append(f"line {number}: {line.strip()}")
    assert not missing, "train paper values without a source:\n" + "\n".join(missing)


def test_no_file_cites_a_name_gone_from_head() -> None:
    files = [ROOT / "params.yaml", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "nasseg").rglob("*.py")), *sorted((ROOT / "stages").glob("*.py"))]
    found = [f"{path.relative_to(ROOT)}: {name}" for path in files for name in _GONE
             if re.search(rf"\b{name}\b", path.read_text())]
    assert not found, found


def test_val_drop_last_scores_whole_batches_only() -> None:
    """The authors' validation loader drops the last incomplete batch (drop_last=True)."""
    from nasseg.search.config import ProxyConfig
    wacv = ProxyConfig(val_batch_size=10, val_num_images=500, val_drop_last=True)
    assert wacv.val_images_scored(298) == 290          # 2,975 - int(2,975 * 0.9) meta-val images
    cvpr = ProxyConfig(val_batch_size=64, val_num_images=1100, val_drop_last=True)
    assert cvpr.val_images_scored(1059) == 1024
    assert ProxyConfig(val_batch_size=64, val_num_images=1100).val_images_scored(1059) == 1059
    assert ProxyConfig(val_batch_size=4, val_num_images=6, val_drop_last=True).val_images_scored(3) == 0
