"""RefineNet-LW-152, the papers' distillation teacher: key layout, size, strict loading, teacher path."""
import pytest
import torch

from nasseg.models import WeightsError
from nasseg.models.refinenet import RefineNetLW, load_refinenet_weights
from nasseg.search.config import DistillationConfig
from nasseg.search.teachers import load_teacher

LAYERS_152 = (3, 8, 36, 3)

# The refinement's keys in the authors' registration order (ResNetLW.__init__ in
# nas-segm-pytorch src/kd/rf_lw/model_lw_v2.py and light-weight-refinenet models/resnet.py).
_CRP = [f"mflow_conv_g{{}}_pool.0.{i}_outvar_dimred.weight" for i in range(1, 5)]
REFINE_KEYS = (["p_ims1d2_outl1_dimred.weight"] + [k.format(1) for k in _CRP]
               + ["mflow_conv_g1_b3_joint_varout_dimred.weight"]
               + [key for g in (2, 3) for key in (
                   [f"p_ims1d2_outl{g}_dimred.weight", f"adapt_stage{g}_b2_joint_varout_dimred.weight"]
                   + [k.format(g) for k in _CRP] + [f"mflow_conv_g{g}_b3_joint_varout_dimred.weight"])]
               + ["p_ims1d2_outl4_dimred.weight", "adapt_stage4_b2_joint_varout_dimred.weight"]
               + [k.format(4) for k in _CRP] + ["clf_conv.weight", "clf_conv.bias"])


def authors_backbone_keys(layers=LAYERS_152) -> list[str]:
    """conv1/bn1, then layerN.i.{conv,bn}{1,2,3} and layerN.0.downsample.{0,1} (every stage's first block)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = ["conv1.weight"] + [f"bn1.{s}" for s in bn]
    for n, blocks in enumerate(layers, 1):
        for i in range(blocks):
            p = f"layer{n}.{i}."
            for j in (1, 2, 3):
                keys += [f"{p}conv{j}.weight"] + [f"{p}bn{j}.{s}" for s in bn]
            if i == 0:
                keys += [f"{p}downsample.0.weight"] + [f"{p}downsample.1.{s}" for s in bn]
    return keys


def refinenet_lw_params(layers=LAYERS_152, num_classes=21) -> int:
    """The parameter count from the authors' channel counts (all convs bias-free but clf_conv)."""
    total = 3 * 64 * 7 * 7 + 2 * 64                       # conv1 + bn1
    inplanes = 64
    for planes, blocks in zip((64, 128, 256, 512), layers):
        for i in range(blocks):
            total += inplanes * planes + 9 * planes * planes + planes * 4 * planes + 2 * 6 * planes
            if i == 0:                                     # downsample conv + bn
                total += inplanes * 4 * planes + 2 * 4 * planes
            inplanes = 4 * planes
    total += 2048 * 512 + 4 * 512 * 512 + 512 * 256        # outl1, CRP g1, g1_b3
    total += 1024 * 256 + 512 * 256 + 256 * 256            # outl2, outl3, outl4
    total += 3 * 256 * 256                                 # adapt_stage2..4
    total += 3 * 4 * 256 * 256 + 2 * 256 * 256             # CRP g2..g4, g2_b3 and g3_b3
    total += 256 * num_classes * 9 + num_classes           # clf_conv (3x3, bias)
    return total


# 58,143,808 (ResNet-152 without fc: torchvision's 60,192,808 minus 2048*1000+1000)
# + 3,849,493 (refinement + 21-class classifier, see refinenet_lw_params) = 61,993,301.
# The light-weight-refinenet README lists RF-LW-ResNet-152 at "62" M params.
RF_LW152_VOC_PARAMS = 61_993_301


# Tiny inputs through a deep net: thread sync dominates, and collapses when the CPU is shared.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = RefineNetLW(21, layers=LAYERS_152)
    # Non-trivial BN statistics, so that a wrong load would show in the outputs.
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return net.eval()


@pytest.fixture(scope="module")
def weights_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("rf") / "rf_lw152.pth.tar"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    return path


def test_state_dict_keys_match_authors_layout(model):
    keys = list(model.state_dict())
    assert keys == authors_backbone_keys() + REFINE_KEYS
    # spot checks, spelled out
    assert keys[0] == "conv1.weight"
    assert keys[-1] == "clf_conv.bias"
    assert "layer3.35.conv3.weight" in keys and "layer3.36.conv1.weight" not in keys
    assert "mflow_conv_g1_pool.0.1_outvar_dimred.weight" in keys
    assert "mflow_conv_g4_pool.0.4_outvar_dimred.weight" in keys
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["clf_conv.weight"] == (21, 256, 3, 3)
    assert shapes["p_ims1d2_outl1_dimred.weight"] == (512, 2048, 1, 1)
    assert shapes["mflow_conv_g1_b3_joint_varout_dimred.weight"] == (256, 512, 1, 1)
    assert shapes["p_ims1d2_outl2_dimred.weight"] == (256, 1024, 1, 1)


def test_backbone_keys_are_torchvision_resnet152s():
    torchvision = pytest.importorskip("torchvision")
    tv = [k for k in torchvision.models.resnet152().state_dict() if not k.startswith("fc.")]
    assert tv == authors_backbone_keys()


def test_parameter_count(model):
    assert refinenet_lw_params() == RF_LW152_VOC_PARAMS
    assert sum(p.numel() for p in model.parameters()) == RF_LW152_VOC_PARAMS


def test_output_is_quarter_resolution_logits(model):
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 21, 16, 16)
    assert torch.isfinite(out).all()


def test_load_module_prefixed_file_gives_equal_outputs(model, weights_file):
    torch.manual_seed(5)
    other = RefineNetLW(21).eval()
    x = torch.randn(1, 3, 64, 64)
    load_refinenet_weights(other, weights_file)
    with torch.no_grad():
        assert torch.equal(other(x), model(x))


def test_load_wrapped_dict_without_num_batches_tracked(model):
    # Checkpoints saved by torch 0.4.0 have no num_batches_tracked; training scripts wrap the dict.
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    other = RefineNetLW(21).eval()
    load_refinenet_weights(other, {"epoch": 3, "state_dict": state})
    assert torch.equal(other.clf_conv.weight, model.clf_conv.weight)
    assert torch.equal(other.layer4[2].bn3.running_var, model.layer4[2].bn3.running_var)


def test_corrupted_keys_raise_with_names(model):
    state = dict(model.state_dict())
    del state["mflow_conv_g2_pool.0.3_outvar_dimred.weight"]
    state["mflow_conv_g5_pool.0.1_outvar_dimred.weight"] = torch.zeros(256, 256, 1, 1)
    state["clf_conv.weight"] = torch.zeros(40, 256, 3, 3)
    with pytest.raises(WeightsError) as err:
        load_refinenet_weights(RefineNetLW(21), state)
    msg = str(err.value)
    assert "missing" in msg and "mflow_conv_g2_pool.0.3_outvar_dimred.weight" in msg
    assert "not used" in msg and "mflow_conv_g5_pool.0.1_outvar_dimred.weight" in msg
    assert "shape mismatch" in msg and "clf_conv.weight: checkpoint (40, 256, 3, 3)" in msg


def test_missing_file_says_where_to_get_weights(tmp_path):
    path = tmp_path / "nope.pth.tar"
    with pytest.raises(FileNotFoundError, match="nope.pth.tar") as err:
        load_refinenet_weights(RefineNetLW(21, layers=(1, 1, 1, 1)), path)
    assert "RefineNet-LW-152" in str(err.value) and "non-commercial" in str(err.value)


def test_teacher_path(model, weights_file):
    teacher = load_teacher(DistillationConfig(teacher="refinenet_lw152", path=str(weights_file)), 21, "cpu")
    assert not teacher.model.training
    x = torch.randn(2, 3, 64, 48)
    out = teacher(x)
    assert out.shape == (2, 21, 16, 12)
    with torch.no_grad():
        assert torch.allclose(out, model(x))   # native 1/4 size: the wrapper's resize changes nothing


def test_teacher_needs_path():
    with pytest.raises(ValueError, match="refinenet_lw152"):
        DistillationConfig(teacher="refinenet_lw152")
