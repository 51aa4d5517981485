"""BatchNorm folding, dead-branch removal, ONNX export and its check, the export stage."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nasseg.checkpoint import ModelCard, save_model
from nasseg.export import (ChannelAffine, ExportError, check_onnx, deployable, export_onnx,
                           fold_batchnorm)
from nasseg.genotypes import load_genotype
from stages.export import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZES = [(64, 96), (80, 112)]


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so folding matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def card_for(genotype: str, **kw: object) -> ModelCard:
    return ModelCard(load_genotype(genotype), 5, **kw)


def batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


# wacv/arch0 aggregates with `cat` (BN -> ReLU -> conv on a concatenation), arch1 with `psum`
@pytest.mark.parametrize("genotype", ["wacv/arch0", "wacv/arch1", "cvpr/arch0"])
def test_fold_batchnorm_preserves_the_output_and_leaves_no_batchnorm(genotype):
    torch.manual_seed(0)
    model = randomise_batchnorm(card_for(genotype).build())
    before = batchnorms(model)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
    folded, report = fold_batchnorm(model)
    assert batchnorms(folded) == [] and batchnorms(model) == before   # the original is untouched
    assert sorted(report.folded + report.affine) == sorted(before)
    affine = [n for n, m in folded.named_modules() if isinstance(m, ChannelAffine)]
    assert affine == list(report.affine)
    if genotype == "wacv/arch0":   # one per cat aggregation: nothing to fold it into
        cats = [n for n, m in model.named_modules() if type(m).__name__ == "ConcatReduce"]
        assert sorted(report.affine) == sorted(f"{n}.conv1x1.0" for n in cats) and cats
        assert "per-channel scale/shift" in report.summary()
    else:
        assert report.all_folded, report.affine
    with torch.no_grad():
        out = folded(x)
    torch.testing.assert_close(out, ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-4)


def test_fold_refuses_batchnorm_without_running_statistics():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ExportError, match="track_running_stats=False"):
        fold_batchnorm(model)


def test_deployable_drops_the_auxiliary_heads_and_unread_inputs():
    torch.manual_seed(0)
    card = card_for("cvpr/arch0", aux_cell=True, agg_size=48, repeats=1)
    model = randomise_batchnorm(card.build())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    deployed, report = deployable(model)
    heads = [f"decoder.aux_clfs.{i}" for i in range(len(model.decoder.aux_clfs))]
    assert heads and set(heads) <= set(report.removed)
    unread = {f"decoder.adapt{k + 1}" for k in range(len(model.encoder.out_channels))
              if k not in model.decoder.read_inputs}
    assert unread <= set(report.removed)
    assert not any(".aux_clfs." in n for n, _ in deployed.named_parameters())
    assert not deployed.training and not any(p.requires_grad for p in deployed.parameters())
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), ref, atol=1e-4 * float(ref.abs().max()), rtol=1e-4)


@pytest.fixture(scope="module", params=["wacv/arch0", "cvpr/arch0"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    card = card_for(request.param, dataset="camvid")
    model = randomise_batchnorm(card.build())
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(model, path, card=card, sample_size=(64, 96))
    return model, card, path, report


@pytest.mark.slow
def test_onnx_matches_pytorch_at_two_sizes(exported):
    import onnx

    model, card, path, report = exported
    diffs = check_onnx(path, model, SIZES, batch=2)
    assert set(diffs) == {"64x96", "80x112"} and max(diffs.values()) < 1e-3
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert ModelCard.from_dict(json.loads(meta["nasseg_card"])) == card
    assert json.loads(meta["nasseg_fold"])["folded"] == len(report.folded)
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]   # batch, 3, H, W


@pytest.mark.slow
def test_check_onnx_fails_with_the_difference(exported):
    model, _, path, _ = exported
    changed = ModelCard(model.genotype, 5).build().eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.decoder.conv_clf.bias.add_(0.5)
    with pytest.raises(ExportError, match=rf"{path}: at input 64x96 ONNX Runtime differs from PyTorch "
                                          r"by up to 0\.5"):
        check_onnx(path, changed, SIZES)


@pytest.mark.slow
def test_export_stage(tmp_path, capsys):
    torch.manual_seed(0)
    card = card_for("wacv/arch0")
    save_model(tmp_path / "model.pt", card, randomise_batchnorm(card.build()))
    out = tmp_path / "out" / "model.onnx"
    assert main(["--checkpoint", str(tmp_path / "model.pt"), "--out", str(out), "--sample-size", "64x96",
                 "--check-sizes", "64x96,72x88"]) == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert set(summary["check_max_abs_diff"]) == {"64x96", "72x88"}
    assert summary["space"] == "wacv" and summary["batchnorm"]["folded"] > 50
    # arch0's cat aggregations: the BatchNorms that had no convolution to go into, named
    assert summary["batchnorm"]["affine"] and all(n.endswith(".conv1x1.0") for n in summary["batchnorm"]["affine"])
    assert "wrote" in capsys.readouterr().err


def test_export_stage_bad_input(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"error: {missing}: model checkpoint not found" in capsys.readouterr().err
    good = tmp_path / "good.pt"
    save_model(good, card_for("wacv/arch0"), card_for("wacv/arch0").build())
    corrupt = tmp_path / "truncated.pt"
    corrupt.write_bytes(good.read_bytes()[:5000])
    assert main(["--checkpoint", str(corrupt), "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"error: {corrupt}: cannot read this model checkpoint" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    assert main(["--checkpoint", str(garbage), "--out", str(tmp_path / "m.onnx")]) == 2
    assert f"error: {garbage}: " in capsys.readouterr().err
    authors = tmp_path / "authors.pth"
    torch.save(card_for("wacv/arch0").build().state_dict(), authors)
    assert main(["--checkpoint", str(authors), "--out", str(tmp_path / "m.onnx"),
                 "--genotype", "cvpr/arch0", "--num-classes", "5"]) == 2
    assert f"error: {authors}: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(authors), "--out", "x.onnx", "--check-sizes", "16x16"])
    assert not (tmp_path / "m.onnx").exists()
