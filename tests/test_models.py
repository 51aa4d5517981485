"""Networks: exact parameter counts of the published models, forward/backward.

One base tester, a tiny subclass per published model (as in
segmentation_models_pytorch's tests).
"""
import random

import pytest
import torch
from torch import nn

import nasseg
from nasseg.models import TrainOutput
from nasseg.models.encoder import MobileNetV2Encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class BaseSegmenterTest:
    space: str
    arch: str
    # {num_classes: (total params, params without auxiliary heads)}
    params: dict[int, tuple[int, int]]
    # Output stride: that of the largest map the decoder collects.
    stride = 4

    def build(self, num_classes, **kw):
        return nasseg.build_segmenter(nasseg.published_genotype(self.space, self.arch), num_classes, **kw)

    @pytest.mark.parametrize("which", [0, 1])
    def test_parameter_count(self, which):
        num_classes, (total, without_aux) = list(self.params.items())[which]
        model = self.build(num_classes)
        assert nasseg.count_parameters(model) == total
        assert nasseg.count_parameters(model, include_aux=False) == without_aux

    def test_eval_output_at_decoder_resolution(self):
        num_classes = next(iter(self.params))
        model = self.build(num_classes).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 64, 96))
        assert isinstance(out, torch.Tensor)
        assert out.shape == (1, num_classes, 64 // self.stride, 96 // self.stride)

    def test_train_mode_and_backward(self):
        num_classes = next(iter(self.params))
        model = self.build(num_classes, agg_size=16, repeats=1).train()
        out = model(torch.randn(2, 3, 64, 64))
        assert isinstance(out, TrainOutput)
        logits, aux = out
        assert logits.shape[:2] == (2, num_classes)
        if self.space == "cvpr":
            assert len(aux) == 3 and all(a.shape[1] == num_classes for a in aux)
        else:
            assert aux == ()
        loss = logits.mean() + sum(a.mean() for a in aux)
        loss.backward()
        grads = [p.grad for p in model.decoder.parameters()]
        assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > len(grads) // 2


class TestCVPRArch0(BaseSegmenterTest):
    space, arch = "cvpr", "arch0"
    params = {21: (2_666_260, 2_629_909), 1: (2_620_100, 2_618_369)}


class TestCVPRArch1(BaseSegmenterTest):
    space, arch = "cvpr", "arch1"
    stride = 8  # no block reads the stride-4 encoder output
    params = {21: (2_846_484, 2_810_133), 1: (2_800_324, 2_798_593)}


class TestCVPRArch2(BaseSegmenterTest):
    space, arch = "cvpr", "arch2"
    stride = 8
    params = {21: (2_889_492, 2_853_141), 1: (2_843_332, 2_841_601)}


class TestWACVArch0(BaseSegmenterTest):
    space, arch = "wacv", "arch0"
    params = {19: (280_147, 280_147), 11: (275_531, 275_531)}


class TestWACVArch1(BaseSegmenterTest):
    space, arch = "wacv", "arch1"
    params = {19: (268_235, 268_235), 11: (263_619, 263_619)}


def test_encoder_alone():
    assert nasseg.count_parameters(MobileNetV2Encoder((1, 2, 4, 6))) == 1_812_800
    assert nasseg.count_parameters(MobileNetV2Encoder((1, 2))) == 56_576
    enc = MobileNetV2Encoder((1, 2, 4, 6)).eval()
    feats = enc(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == enc.out_channels == [24, 32, 96, 320]
    assert [f.shape[2] for f in feats] == [16, 8, 4, 2]


@pytest.mark.parametrize("space", ["cvpr", "wacv"])
@pytest.mark.parametrize("seed", range(6))
def test_random_genotypes_forward_backward(space, seed):
    g = nasseg.random_genotype(space, random.Random(seed))
    model = nasseg.build_segmenter(g, 5, agg_size=16, repeats=1, aux_cell=(space == "cvpr"))
    logits, aux = model.train()(torch.randn(2, 3, 64, 64))
    assert logits.shape[:2] == (2, 5) and torch.isfinite(logits).all()
    (logits.square().mean() + sum(a.square().mean() for a in aux)).backward()
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape[:2] == (1, 5)


def test_aux_cell_is_cvpr_only():
    with pytest.raises(ValueError, match="aux_cell"):
        nasseg.build_segmenter(nasseg.published_genotype("wacv", "arch0"), 19, aux_cell=True)
    with pytest.raises(TypeError):
        nasseg.build_segmenter([[1]], 19)


def calls(modules: dict[str, torch.nn.Module]) -> tuple[dict[str, int], list]:
    """Count forward calls of each named module (returns the counts and the hook handles)."""
    counts = dict.fromkeys(modules, 0)

    def hook(name):
        def count(*_):
            counts[name] += 1
        return count
    return counts, [m.register_forward_hook(hook(n)) for n, m in modules.items()]


@pytest.mark.parametrize("arch", ["arch0", "arch1", "arch2"])
def test_cvpr_decoder_skips_the_adapt_convs_nothing_reads(arch):
    genotype = nasseg.published_genotype("cvpr", arch)
    model = nasseg.build_segmenter(genotype, 21, agg_size=16, repeats=1).eval()
    adapts = {f"adapt{k}": getattr(model.decoder, f"adapt{k}") for k in range(1, genotype.num_pools + 1)}
    counts, handles = calls(adapts)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    read = {i for c in genotype.connections for i in (c.input_a, c.input_b) if i < genotype.num_pools}
    assert counts == {f"adapt{k}": int(k - 1 in read) for k in range(1, genotype.num_pools + 1)}
    # The parameters stay (checkpoints and parameter counts are unchanged).
    assert all(sum(p.numel() for p in m.parameters()) > 0 for m in adapts.values())


def test_some_published_cvpr_genotype_leaves_an_encoder_output_unread():
    """So that the test above checks a skip, not only the calls that always happen."""
    unread = []
    for arch in ("arch0", "arch1", "arch2"):
        g = nasseg.published_genotype("cvpr", arch)
        read = {i for c in g.connections for i in (c.input_a, c.input_b)}
        unread += [i for i in range(g.num_pools) if i not in read]
    assert unread


def test_aux_heads_are_skipped_when_not_asked_for():
    model = nasseg.build_segmenter(nasseg.published_genotype("cvpr", "arch0"), 21, agg_size=16,
                                   repeats=1, aux_cell=True).train()
    heads = {f"head{i}": h for i, h in enumerate(model.decoder.aux_clfs)}
    x = torch.randn(2, 3, 64, 64)
    counts, handles = calls(heads)
    torch.manual_seed(0)
    with_aux = model(x)
    assert len(with_aux.aux_logits) == len(heads) and set(counts.values()) == {1}
    torch.manual_seed(0)
    without = model(x, aux=False)
    for h in handles:
        h.remove()
    assert without.aux_logits == () and set(counts.values()) == {1}   # not called again
    torch.testing.assert_close(without.logits, with_aux.logits)
    # The WACV decoder takes the same argument and has no heads.
    wacv = nasseg.build_segmenter(nasseg.published_genotype("wacv", "arch0"), 19, agg_size=16, repeats=1)
    assert wacv.train()(x, aux=False).aux_logits == ()


@pytest.mark.parametrize("kernel, dilation, size", [(5, 6, (64, 64)), (3, 3, (30, 17)), (5, 6, (7, 9)),
                                                   (3, 6, (5, 4)), (3, 2, (8, 6))])
@pytest.mark.parametrize("nhwc", [False, True])
def test_dilated_depthwise_on_subgrids_equals_the_dilated_kernel(kernel, dilation, size, nhwc):
    """nasseg.models.ops.DepthwiseConv2d: the space-to-batch path gives the dilated
    convolution's output and gradients (float64), in the input's memory format."""
    from nasseg.models.ops import DepthwiseConv2d, use_depthwise_kernel

    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 6, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                           groups=6, bias=False).double()
    x = torch.randn(2, 6, *size, dtype=torch.float64, requires_grad=True)
    inp = x.contiguous(memory_format=torch.channels_last) if nhwc else x
    plain = conv(inp)
    grad = torch.randn_like(plain)
    expected = torch.autograd.grad(plain, (x, conv.weight), grad)
    assert use_depthwise_kernel(nn.Sequential(conv), "subgrids") == 1 and conv.kernel == "subgrids"
    out = conv(inp)
    torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(out, (x, conv.weight), grad), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    fmt = torch.channels_last if nhwc else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("kernel, stride, dilation, padding, size, channels",
                         [(5, 1, 6, 12, (64, 64), 48), (5, 1, 6, 12, (8, 8), 48), (3, 1, 1, 1, (13, 11), 24),
                          (3, 2, 1, 1, (9, 10), 37), (3, 2, 2, 2, (12, 12), 8), (5, 1, 3, 6, (7, 9), 5),
                          (3, 1, 1, 0, (6, 7), 16), (3, 1, 2, 3, (5, 6), 9), (3, 2, 1, 0, (9, 8), 8)])
def test_depthwise_by_this_projects_loops_equals_the_framework(kernel, stride, dilation, padding, size,
                                                              channels):
    """nasseg.models.depthwise (the C loops of nasseg.models._depthwise): output, input and
    weight gradients of float32 NHWC depthwise convolutions equal float64 references to
    float32 rounding, for channel counts that use every block width (16, 8, 1), strides
    and dilations, paddings other than 'same' (the stride-1 input gradient is a forward
    pass with the flipped kernel and the complementary padding), and maps on which taps
    fall in the padding. The weight gradient sums
    3 x 64 x 64 products per tap in float32: it is held to 1e-5 of its largest value."""
    from nasseg.models.ops import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(channels, channels, kernel, stride=stride, padding=padding,
                           dilation=dilation, groups=channels, bias=False)
    x = torch.randn(3, channels, *size)
    ref = torch.nn.functional.conv2d(x.double(), conv.weight.double(), None, stride, conv.padding, dilation,
                                     channels)
    grad = torch.randn(ref.shape)
    x64 = x.double().requires_grad_()
    w64 = conv.weight.detach().double().requires_grad_()
    want = torch.autograd.grad(torch.nn.functional.conv2d(x64, w64, None, stride, conv.padding, dilation,
                                                          channels), (x64, w64), grad.double())
    conv.kernel = "direct"
    inp = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    assert "direct" in conv.kernels_for(inp)
    out = conv(inp)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
    got = torch.autograd.grad(out, (inp, conv.weight), grad)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-5, atol=1e-5)
    assert (got[1].double() - want[1]).abs().max() <= 1e-5 * want[1].abs().max()
    # the same threads, the same sums: a second call gives the same bits
    assert torch.equal(conv(inp), out)


def test_depthwise_kernels_fall_back_where_they_cannot_run():
    """"direct" needs NHWC float32 without bias, "subgrids" a dilated stride-1 kernel: other
    calls run nn.Conv2d's forward; an unknown kernel name is refused."""
    from nasseg.models.ops import DepthwiseConv2d, use_depthwise_kernel

    conv = DepthwiseConv2d(4, 4, 3, padding=1, groups=4, bias=True)
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    assert conv.kernels_for(x) == ("plain",)
    conv.kernel = "direct"
    torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x))
    assert DepthwiseConv2d(4, 4, 3, padding=1, groups=4, bias=False).kernels_for(x) == ("plain", "direct")
    assert DepthwiseConv2d(4, 4, 3, padding=2, dilation=2, groups=4, bias=False).kernels_for(
        x.contiguous()) == ("plain", "subgrids")
    with pytest.raises(ValueError, match="unknown depthwise kernel 'fast'"):
        use_depthwise_kernel(nn.Sequential(conv), "fast")


@pytest.mark.parametrize("folded", [False, True])
def test_reduce_collected_is_the_originals_concatenate_resize_relu_and_reduce(folded):
    """The original concatenates as it goes, resizes the running concatenation to a
    taller next map, then applies ReLU and pre_clf; reduce_collected resizes the parts
    and sums their 1x1 convs (float64: the same values and gradients). Folded: the
    conv has a bias (its BatchNorm folded in for export)."""
    import copy

    from nasseg.models.cvpr_decoder import reduce_collected
    from nasseg.models.ops import conv_bn_relu, resize_to

    torch.manual_seed(0)
    feats = [torch.randn(2, c, h, h + 1, dtype=torch.float64, requires_grad=True)
             for c, h in ((3, 8), (2, 4), (3, 16), (4, 16), (3, 5))]
    indices = [0, 1, 2, 4, 3]
    reduce = conv_bn_relu(15, 6, 1).double()
    if folded:
        reduce[0].bias = nn.Parameter(torch.randn(6, dtype=torch.float64))
    reference = copy.deepcopy(reduce)
    expected = feats[indices[0]]
    for i in indices[1:]:
        nxt = feats[i]
        if expected.shape[2] > nxt.shape[2]:
            nxt = resize_to(nxt, expected.shape[2:])
        elif nxt.shape[2] > expected.shape[2]:
            expected = resize_to(expected, nxt.shape[2:])
        expected = torch.cat([expected, nxt], dim=1)
    expected = reference(torch.relu(expected))
    out = reduce_collected(feats, indices, reduce)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, [*feats, *reduce.parameters()], grad),
                    torch.autograd.grad(expected, [*feats, *reference.parameters()], grad)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("training", [True, False])
def test_concat_reduce_equals_bn_relu_conv_of_the_concatenation(training):
    """ConcatReduce runs BN, ReLU and the 1x1 conv on the two halves (no concatenated
    copy); outputs, gradients, running statistics and batch count are those of the
    modules applied to the concatenation (float64)."""
    import copy

    from nasseg.models.ops import ConcatReduce

    torch.manual_seed(0)
    agg = ConcatReduce(5, 5, 5, larger=True).double().train(training)
    with torch.no_grad():   # running statistics away from their initial values
        agg.conv1x1[0].running_mean.uniform_(-1, 1)
        agg.conv1x1[0].running_var.uniform_(0.5, 2)
    reference = copy.deepcopy(agg.conv1x1)
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    out = agg(x, y)
    expected = reference(torch.cat([x, y], 1))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, y, *agg.conv1x1.parameters()], grad)
    want = torch.autograd.grad(expected, [x, y, *reference.parameters()], grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for a, b in zip(agg.conv1x1.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_other_modules_in_the_concatenation_paths_run_their_own_forward_on_the_concatenation():
    """A BatchNorm2d subclass (as the all-reducing one of multi-process training) in the
    WACV cat aggregation, and a pre_clf that is not conv-first (a wrapper), see the
    concatenation itself, not per-part stand-ins for their forward."""
    from nasseg.models.cvpr_decoder import reduce_collected
    from nasseg.models.ops import ConcatReduce, conv_bn_relu

    class Doubling(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    agg = ConcatReduce(4, 4, 4, larger=True).double()
    agg.conv1x1[0] = Doubling(8).double()
    x, y = (torch.randn(2, 4, 5, 5, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(agg(x, y), agg.conv1x1(torch.cat([x, y], 1)), rtol=1e-12, atol=1e-12)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = conv_bn_relu(7, 3, 1).double()

        def forward(self, z):
            return self.inner(z) + 1

    feats = [torch.randn(2, c, 6, 6, dtype=torch.float64) for c in (3, 4)]
    wrapped = Wrapped()
    torch.testing.assert_close(reduce_collected(feats, [0, 1], wrapped),
                               wrapped(torch.relu(torch.cat(feats, 1))), rtol=1e-12, atol=1e-12)
