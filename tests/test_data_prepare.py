"""prepare, whatever the dataset: atomic output, safe re-runs, fingerprint, CLI."""
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nasseg.data.prepare as prep
from nasseg.data import DataError, PrepareParams, prepare_dataset, synthesize_dataset
from nasseg.data.synthesize import DataParams, SynthesizeParams
from stages import prepare as prepare_stage
from stages.params import load_section

ROOT = Path(__file__).resolve().parents[1]
PARAMS = PrepareParams(workers=2)


@pytest.fixture(scope="module")
def raw_camvid(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw") / "camvid"
    synthesize_dataset("camvid", raw, num_images=10, seed=3, height=24, width=32)
    return raw


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_interrupted_run_leaves_nothing(raw_camvid, tmp_path, monkeypatch):
    calls = {"n": 0}
    convert = prep._convert_sample

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return convert(*args, **kwargs)

    monkeypatch.setattr(prep, "_convert_sample", interrupted)
    out = tmp_path / "prepared" / "camvid"
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("camvid", raw_camvid, out, PrepareParams(workers=0))
    assert not out.exists()
    assert list((tmp_path / "prepared").iterdir()) == []  # no temporary folder left behind


def test_failed_rerun_keeps_the_previous_output(raw_camvid, tmp_path):
    out = tmp_path / "out"
    prepare_dataset("camvid", raw_camvid, out, PARAMS)
    before = tree(out)
    broken = tmp_path / "raw_broken"
    synthesize_dataset("camvid", broken, num_images=10, seed=3, height=24, width=32)
    bad = sorted((broken / "test").iterdir())[-1]
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(DataError, match=re.escape(str(bad))):
        prepare_dataset("camvid", broken, out, PARAMS)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "raw_broken"]


def test_rerun_is_safe_and_reproducible(raw_camvid, tmp_path):
    out = tmp_path / "out"
    first = prepare_dataset("camvid", raw_camvid, out, PARAMS)
    files = tree(out)
    second = prepare_dataset("camvid", raw_camvid, out, PrepareParams(workers=0))
    assert first == second and tree(out) == files
    assert first["synthetic"] is True and first["synthetic_params"]["seed"] == 3
    assert first["fingerprint"].startswith("sha256:") and first["num_input_files"] == 20


def test_fingerprint_follows_the_inputs(tmp_path):
    raw = tmp_path / "raw"
    synthesize_dataset("camvid", raw, num_images=6, seed=0, height=20, width=20)
    a = prepare_dataset("camvid", raw, tmp_path / "a", PARAMS)["fingerprint"]
    label = sorted((raw / "valannot").iterdir())[0]
    data = bytearray(label.read_bytes())
    from PIL import Image
    import numpy as np
    arr = np.asarray(Image.open(label)).copy()
    arr[0, 0] = (arr[0, 0] + 1) % 11
    Image.fromarray(arr, "L").save(label)
    assert label.read_bytes() != bytes(data)
    b = prepare_dataset("camvid", raw, tmp_path / "b", PARAMS)["fingerprint"]
    assert a != b


def test_refuses_to_replace_a_foreign_folder(raw_camvid, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(DataError, match=re.escape(str(out)) + ".*refusing to replace"):
        prepare_dataset("camvid", raw_camvid, out, PARAMS)
    assert (out / "thesis.tex").read_text() == "do not delete"
    with pytest.raises(DataError, match="must not be, contain or lie inside the raw folder"):
        prepare_dataset("camvid", raw_camvid, raw_camvid / "prepared", PARAMS)


def test_replaces_its_own_output_even_without_meta(raw_camvid, tmp_path):
    # Snakemake deletes a rule's declared output (meta.json) before re-running it.
    out = tmp_path / "out"
    prepare_dataset("camvid", raw_camvid, out, PARAMS)
    (out / "meta.json").unlink()
    prepare_dataset("camvid", raw_camvid, out, PARAMS)
    assert (out / "meta.json").is_file()


def test_cli(raw_camvid, tmp_path, capsys):
    out = tmp_path / "out"
    rc = prepare_stage.main(["--dataset", "camvid", "--raw", str(raw_camvid), "--out", str(out),
                             "--params", str(ROOT / "params.yaml"), "--set", "workers=1"])
    assert rc == 0
    assert "prepared camvid" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["lists"] == {"train": "train.lst", "val": "val.lst", "test": "test.lst"}
    rc = prepare_stage.main(["--dataset", "voc", "--raw", str(raw_camvid), "--out",
                             str(tmp_path / "voc"), "--params", str(ROOT / "params.yaml")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {raw_camvid / 'VOCdevkit/VOC2012/JPEGImages'}")
    rc = prepare_stage.main(["--dataset", "camvid", "--raw", str(raw_camvid), "--out", str(out),
                             "--params", str(ROOT / "params.yaml"), "--set", "workerz=1"])
    assert rc == 2 and "workerz" in capsys.readouterr().err


def test_help_of_both_stages():
    for stage in ("stages.prepare", "stages.synthesize"):
        proc = subprocess.run([sys.executable, "-m", stage, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "--dataset {voc,nyud,cityscapes,camvid}" in proc.stdout


def test_params_yaml_sections_load():
    path = ROOT / "params.yaml"
    assert isinstance(load_section(path, "prepare", PrepareParams), PrepareParams)
    synth = load_section(path, "synthesize", SynthesizeParams)
    assert synth.cityscapes.width <= 512 and synth.cityscapes.num_images <= 100
    data = load_section(path, "data", DataParams)
    assert {data.source.voc, data.source.nyud, data.source.cityscapes, data.source.camvid} \
        <= {"synthetic", "real"}
