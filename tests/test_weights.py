"""Weights: the authors' checkpoint layout (fidelity fixtures) and ImageNet init."""
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import nasseg
from nasseg.models.encoder import MobileNetV2Encoder

FIXTURES = Path(__file__).parent / "fixtures" / "original"
INDEX = json.loads((FIXTURES / "index.json").read_text())


def fixture_state_dict(case: str) -> dict[str, torch.Tensor]:
    """The fixture recipe: random weights in the TSV's key order (see fixtures/README.md)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for line in (FIXTURES / f"{case}.keys.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(x) for x in shape.split("x"))
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(dims, generator=g, dtype=torch.float64) + 0.5
        else:
            state[key] = torch.randn(dims, generator=g, dtype=torch.float64) * 0.1
    return state


def fixture_model(case: str) -> torch.nn.Module:
    info = INDEX[case]
    genotype = nasseg.genotype_from_legacy(info["space"], info["genotype"])
    return nasseg.build_segmenter(genotype, info["num_classes"], agg_size=info["agg_size"],
                                  repeats=info["repeats"], aux_cell=info.get("aux_cell", False)).double()


def fixture_input() -> torch.Tensor:
    return torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("case", sorted(INDEX))
def test_fixture_reproduces_original_output(case):
    model = fixture_model(case)
    state = fixture_state_dict(case)
    nasseg.load_original_weights(model, state)
    with torch.no_grad():
        out = model.eval()(fixture_input())
    expected = torch.load(FIXTURES / f"{case}.expected.pt")["output"]
    assert list(out.shape) == INDEX[case]["output_shape"]
    torch.testing.assert_close(out, expected, rtol=1e-7, atol=1e-9)
    # Export gives back the authors' keys, in their order, with the same values.
    exported = nasseg.export_original_weights(model)
    assert list(exported) == list(state)
    assert all(torch.equal(exported[k], state[k]) for k in state)


def test_module_prefix_and_wrapped_checkpoints():
    case = "wacv_arch0_19"
    state = fixture_state_dict(case)
    expected = torch.load(FIXTURES / f"{case}.expected.pt")["output"]
    for ckpt in ({f"module.{k}": v for k, v in state.items()}, {"segmenter": state}):
        model = fixture_model(case)
        nasseg.load_original_weights(model, ckpt)
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(fixture_input()), expected, rtol=1e-7, atol=1e-9)


def test_mismatches_are_listed():
    state = fixture_state_dict("wacv_arch0_19")
    state.pop("decoder._ops.0.0.conv1x1.0.weight")
    state["decoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(nasseg.WeightsError) as err:
        nasseg.load_original_weights(fixture_model("wacv_arch0_19"), state)
    msg = str(err.value)
    assert "decoder._ops.0.0.conv1x1.0.weight" in msg and "missing" in msg
    assert "decoder.extra.weight" in msg and "not used" in msg
    # Wrong number of classes: the classifier shapes are reported.
    g = nasseg.published_genotype("wacv", "arch0")
    with pytest.raises(nasseg.WeightsError, match=r"decoder.conv_clf.weight: checkpoint \(19, 64, 3, 3\) vs model \(11, 64, 3, 3\)"):
        nasseg.load_original_weights(nasseg.build_segmenter(g, 11).double(), fixture_state_dict("wacv_arch0_19"))


def test_export_load_round_trip_between_models():
    g = nasseg.published_genotype("cvpr", "arch2")
    a = nasseg.build_segmenter(g, 21, agg_size=16, repeats=1, aux_cell=True)
    b = nasseg.build_segmenter(g, 21, agg_size=16, repeats=1, aux_cell=True)
    nasseg.load_original_weights(b, nasseg.export_original_weights(a))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))
    assert any("._ops." in k for k in nasseg.export_original_weights(a))


def _randomised_torchvision_mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    tv = torchvision.models.mobilenet_v2(weights=None)
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return tv.eval()


def test_imagenet_mapping_is_lossless(tmp_path):
    tv = _randomised_torchvision_mobilenet()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(tv.state_dict(), path)
    enc = MobileNetV2Encoder((1, 2, 4, 6))
    nasseg.load_imagenet_encoder(enc, path)
    x = torch.randn(2, 3, 64, 96)
    # torchvision's features[k] end stages 1, 2, 4, 6 at k = 3, 6, 13, 17.
    ref, h = [], x
    with torch.no_grad():
        for k, layer in enumerate(tv.features[:18]):
            h = layer(h)
            if k in (3, 6, 13, 17):
                ref.append(h)
        ours = enc.eval()(x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_imagenet_weights_offline_fail_clearly(monkeypatch, tmp_path):
    from torchvision.models import MobileNet_V2_Weights

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(MobileNet_V2_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(nasseg.PretrainedWeightsUnavailable, match="mobilenet_v2-b0353104.pth"):
        nasseg.load_imagenet_encoder(MobileNetV2Encoder((1, 2)))
    with pytest.raises(nasseg.PretrainedWeightsUnavailable, match="not found"):
        nasseg.load_imagenet_encoder(MobileNetV2Encoder((1, 2)), tmp_path / "missing.pth")


# -- the authors' search encoder: mbv2_voc_rflw.ckpt (proxy.encoder_weights: FILE) ----------

def rflw_state_dict(num_classes: int = 21) -> dict[str, torch.Tensor]:
    """A state dict laid out as the authors' mbv2_voc_rflw.ckpt, built from the MobileNet-v2
    stage table alone: layer1 = the stem (conv 3->32, BN), layer2..layer8 = the stages, each
    block's conv.{0,1,3,4,6,7} = expand conv, BN, depthwise conv, BN, project conv, BN; then
    the Light-Weight RefineNet decoder. Random values, every tensor distinct."""
    g = torch.Generator().manual_seed(3)
    state: dict[str, torch.Tensor] = {}

    def conv(key: str, shape: tuple[int, ...]) -> None:
        state[key] = torch.randn(shape, generator=g)

    def bn(key: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean"):
            state[f"{key}.{name}"] = torch.randn(c, generator=g)
        state[f"{key}.running_var"] = torch.rand(c, generator=g) + 0.5
        state[f"{key}.num_batches_tracked"] = torch.tensor(1000)

    conv("layer1.0.weight", (32, 3, 3, 3))
    bn("layer1.1", 32)
    c_in = 32
    for stage, (t, c, n, _s) in enumerate([(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]):
        for block in range(n):
            cin = c_in if block == 0 else c
            hidden, key = cin * t, f"layer{stage + 2}.{block}.conv"
            conv(f"{key}.0.weight", (hidden, cin, 1, 1))
            bn(f"{key}.1", hidden)
            conv(f"{key}.3.weight", (hidden, 1, 3, 3))
            bn(f"{key}.4", hidden)
            conv(f"{key}.6.weight", (c, hidden, 1, 1))
            bn(f"{key}.7", c)
        c_in = c
    for k, c in zip(range(8, 2, -1), (320, 160, 96, 64, 32, 24)):
        conv(f"conv{k}.weight", (256, c, 1, 1))
    for crp in range(1, 5):
        for i in range(1, 5):
            conv(f"crp{crp}.0.{i}_outvar_dimred.weight", (256, 256, 1, 1))
    for k in (2, 3, 4):
        conv(f"conv_adapt{k}.weight", (256, 256, 1, 1))
    conv("segm.weight", (num_classes, 256, 3, 3))
    conv("segm.bias", (num_classes,))
    return state


@pytest.mark.parametrize("space,last_layer", [("cvpr", 8), ("wacv", 4)])
def test_rflw_file_initialises_the_search_encoder(space, last_layer, tmp_path):
    from nasseg.search.teachers import load_encoder_state
    state = rflw_state_dict()
    torch.save(state, tmp_path / "mbv2_voc_rflw.ckpt")
    loaded = load_encoder_state(space, str(tmp_path / "mbv2_voc_rflw.ckpt"))
    used = {k for k in state if int(k.split(".")[0][len("layer"):] if k.startswith("layer") else 99) <= last_layer}
    assert set(loaded) == used                     # the decoder and deeper stages are ignored
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    # The same file wrapped by a training script (module. prefix, numpy best_val) loads too.
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "best_val": np.float64(0.7)}
    torch.save(wrapped, tmp_path / "wrapped.ckpt")
    again = load_encoder_state(space, str(tmp_path / "wrapped.ckpt"))
    assert all(torch.equal(again[k], loaded[k]) for k in loaded)


def test_rflw_file_errors_name_the_file_and_keys(tmp_path):
    from nasseg.search.teachers import load_encoder_state
    state = rflw_state_dict()
    del state["layer4.1.conv.3.weight"]
    state["layer2.0.conv.6.weight"] = torch.zeros(16, 32, 3, 3)
    torch.save(state, tmp_path / "bad.ckpt")
    with pytest.raises(nasseg.WeightsError) as err:
        load_encoder_state("wacv", str(tmp_path / "bad.ckpt"))
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'bad.ckpt'} does not hold a MobileNet-v2 encoder")
    assert "missing from the checkpoint (1):\n    layer4.1.conv.3.weight" in msg
    assert "shape mismatch (1):\n    layer2.0.conv.6.weight: checkpoint (16, 32, 3, 3) vs model (16, 32, 1, 1)" in msg
    # Light-Weight RefineNet's own MBv2 names its blocks <k>.output.<i>.<j>: said so.
    renamed = {k.replace(".conv.0.", ".output.0.0."): v for k, v in rflw_state_dict().items()}
    torch.save(renamed, tmp_path / "lw.ckpt")
    with pytest.raises(nasseg.WeightsError, match=r"(?s)named <k>.output.<i>.<j>.*layer2.0.conv.0.weight"):
        load_encoder_state("wacv", str(tmp_path / "lw.ckpt"))
    with pytest.raises(nasseg.PretrainedWeightsUnavailable, match="missing.ckpt: encoder weights file not found"):
        load_encoder_state("wacv", str(tmp_path / "missing.ckpt"))


def test_encoder_file_in_torchvision_or_own_layout(tmp_path):
    """What proxy.encoder_weights: FILE read before: torchvision's layout; and the encoder's own."""
    from nasseg.search.teachers import load_encoder_state
    torch.save(_randomised_torchvision_mobilenet().state_dict(), tmp_path / "tv.pth")
    expected = MobileNetV2Encoder((1, 2))
    nasseg.load_imagenet_encoder(expected, tmp_path / "tv.pth")
    loaded = load_encoder_state("wacv", str(tmp_path / "tv.pth"))
    assert loaded.keys() == expected.state_dict().keys()
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in loaded.items())
    torch.save(expected.state_dict(), tmp_path / "own.pt")
    own = load_encoder_state("wacv", str(tmp_path / "own.pt"))
    assert all(torch.equal(v, loaded[k]) for k, v in own.items())
