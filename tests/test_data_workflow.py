"""The data rules in Snakemake and DVC, on a scratch copy of the checkout.

Covers: the rules exist and chain (synthesize -> prepare -> reproduce_wacv), a
user's download at data/raw/<dataset> is never replaced while the source is
still 'synthetic', the 'real' source uses it as is, and `dvc repro` builds the
prepared data.
"""
import json
from pathlib import Path

import pytest
import yaml

from nasseg.data import synthesize_dataset

from conftest import BIN, scratch_copy
from conftest import run_cli as run


def set_source(root: Path, dataset: str, source: str) -> None:
    path = root / "params.yaml"
    text = path.read_text()
    old = f"    {dataset}: {'real' if source == 'synthetic' else 'synthetic'}\n"
    assert old in text
    path.write_text(text.replace(old, f"    {dataset}: {source}\n", 1))
    assert yaml.safe_load(path.read_text())["data"]["source"][dataset] == source


def jobs(dry_run_output: str) -> set[str]:
    return {line.split()[1].rstrip(":") for line in dry_run_output.splitlines()
            if line.startswith(("rule ", "localrule "))}


@pytest.mark.slow
def test_snakemake_rules_and_the_real_data_guard(tmp_path):
    root = scratch_copy(tmp_path / "repo")
    snakemake = [str(BIN / "snakemake"), "--cores", "2"]
    out = run(snakemake + ["-n", "reproduce_wacv"], root).stdout
    assert {"synthesize_cityscapes", "prepare_cityscapes", "synthesize_camvid",
            "prepare_camvid", "reproduce_wacv"} <= jobs(out)

    # A download placed at data/raw/camvid while the source is still 'synthetic':
    # the workflow refuses to load rather than let Snakemake replace it.
    download = tmp_path / "camvid_download"
    synthesize_dataset("camvid", download, num_images=6, seed=0, height=20, width=20)
    (download / "SYNTHETIC.json").unlink()
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/camvid").symlink_to(download)
    proc = run(snakemake + ["-n", "reproduce_wacv"], root, ok=False)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data/raw/camvid holds data that the synthesize stage did not write" in message
    assert "data.source.camvid: real" in message

    # With the source set to 'real' it is used as is: no synthesize job for CamVid.
    set_source(root, "camvid", "real")
    out = run(snakemake + ["-n", "reproduce_wacv"], root).stdout
    assert "prepare_camvid" in jobs(out) and "synthesize_camvid" not in jobs(out)
    # (a 6-image "download" is not the official 367/101/233: accept it with a warning)
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("  check_split_sizes: error\n",
                                                 "  check_split_sizes: warn\n", 1))
    run(snakemake + ["data/prepared/camvid"], root)
    assert "split sizes differ" in (root / "logs/prepare_camvid.log").read_text()
    meta = json.loads((root / "data/prepared/camvid/meta.json").read_text())
    assert meta["synthetic"] is False and meta["splits"] == {"train": 2, "val": 2, "test": 2}
    assert sorted(p.name for p in download.iterdir()) == [
        "test", "test.txt", "testannot", "train", "train.txt", "trainannot", "val", "val.txt",
        "valannot"]


@pytest.mark.slow
def test_dvc_repro_prepares_synthetic_data(tmp_path):
    root = scratch_copy(tmp_path)
    run([str(BIN / "dvc"), "repro", "prepare_camvid"], root)
    meta = json.loads((root / "data/prepared/camvid/meta.json").read_text())
    assert meta["synthetic"] is True and meta["dataset"] == "camvid"
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"synthesize_camvid", "prepare_camvid"}
    assert lock["prepare_camvid"]["outs"][0]["path"] == "data/prepared/camvid"
    # Nothing changed: nothing to do.
    assert "didn't change" in run([str(BIN / "dvc"), "repro", "prepare_camvid"], root).stdout
