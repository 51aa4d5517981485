"""Operations of both search spaces, as a name -> factory registry.

Every factory is called as ``OPS[name](c_in, c_out, stride, repeats)``. In the
CVPR cells ``c_in == c_out`` and ``stride == 1``; the WACV templates change
channels (``c_out = c_in * stride``) and may downsample.

Sub-module names (``op.sep_0``, ``conv1x1``, ``adapt.conv0``, ...) follow the
key layout of the authors' released checkpoints, so their weights load into
these modules without renaming inside an op.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .depthwise import depthwise_direct, direct_supported
from .subgrids import depthwise_on_subgrids, memory_format_of

__all__ = ["OPS", "AGG_OPS", "conv_bn_relu", "conv3x3", "resize_to", "match_sizes",
           "DepthwiseConv2d", "DEPTHWISE_KERNELS", "use_depthwise_kernel"]


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=False),
    )


def conv3x3(c_in: int, c_out: int, *, bias: bool, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution whose padding keeps the size (for stride 1)."""
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=bias)


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of an NCHW tensor, skipped when sizes match."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def match_sizes(x: torch.Tensor, y: torch.Tensor, larger: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize one of two maps so both share a spatial size.

    Sizes compare as (H, W) tuples, lexicographically, as in the original;
    ``larger=True`` brings the smaller map up to the larger, ``False`` the
    larger down to the smaller.
    """
    sx, sy = tuple(x.shape[2:]), tuple(y.shape[2:])
    if sx == sy:
        return x, y
    # bool() first: compared with `larger` as is, the symbolic comparison of an export
    # (torch.export, ONNX) fails; in eager mode it is a bool already.
    if bool(sx > sy) == larger:
        return x, resize_to(y, sx)
    return resize_to(x, sy), y


def _conv_op(dilation: int) -> Callable[[int, int, int, int], nn.Module]:
    def make(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
        return nn.Sequential(
            conv3x3(c_in, c_out, bias=False, stride=stride, dilation=dilation),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
        )
    return make


def _conv1x1(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
    return conv_bn_relu(c_in, c_out, 1, stride)


#: how a depthwise convolution is computed: torch's own kernel (oneDNN on the CPU), the
#: same sums on space-to-batch sub-grids (dilated, stride 1), or this project's loops
#: (NHWC float32 on the CPU: :mod:`nasseg.models.depthwise`)
DEPTHWISE_KERNELS = ("plain", "subgrids", "direct")

#: chooses, for a depthwise convolution and its input, one of :data:`DEPTHWISE_KERNELS`
DepthwisePolicy = Callable[["DepthwiseConv2d", torch.Tensor], str]


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise k x k convolution (``groups == channels``) that can be computed in
    more than one way (:data:`DEPTHWISE_KERNELS`), as :attr:`kernel` says: a name, or a
    :data:`DepthwisePolicy` asked at each call (:class:`nasseg.search.kernels.DepthwiseChooser`
    measures which is fastest per input shape).

    * ``"plain"``: nn.Conv2d's forward.
    * ``"subgrids"``: a dilation-d kernel only ever combines pixels d apart, so the input
      splits into d x d interleaved sub-grids, each convolved on its own with the
      undilated kernel; the outputs interleave back (:mod:`nasseg.models.subgrids`).
    * ``"direct"``: this project's loops over NHWC float32 maps
      (:mod:`nasseg.models.depthwise`), which skip the taps that fall in the padding.

    The sums are the same in each (float32 rounding aside). Why: oneDNN's dilated
    depthwise kernels are slow, above all backward, and so are its kernels on small maps
    (on a 2-core AMD EPYC with AVX2 only, 5x5 at dilation 6 on 16x48x64x64, forward and
    backward: 261 ms in oneDNN, 29 ms on sub-grids, 25 ms direct; on 16x48x8x8: 5.4 ms,
    17 ms, 0.6 ms), while on other shapes oneDNN is the fastest.
    A kernel that cannot compute the call (sub-grids for an undilated or strided
    convolution, direct for a float64 or NCHW input) falls back to ``"plain"``.
    Parameters and state dict are nn.Conv2d's.
    """

    kernel: str | DepthwisePolicy = "plain"

    @property
    def has_subgrids(self) -> bool:
        """Whether this convolution can run on sub-grids (stride 1, one dilation > 1)."""
        d = self.dilation[0]
        return d > 1 and self.dilation[1] == d and self.stride == (1, 1)

    def kernels_for(self, x: torch.Tensor) -> tuple[str, ...]:
        """The kernels of :data:`DEPTHWISE_KERNELS` that can compute this convolution of ``x``."""
        square = (self.stride[0] == self.stride[1] and self.dilation[0] == self.dilation[1]
                  and not isinstance(self.padding, str) and self.padding[0] == self.padding[1])
        direct = (square and memory_format_of(x) == torch.channels_last
                  and direct_supported(x, self.weight, self.bias, self.groups))
        return ("plain",) + (("subgrids",) if self.has_subgrids else ()) + (("direct",) if direct else ())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel if isinstance(self.kernel, str) else self.kernel(self, x)
        if kernel != "plain" and kernel in self.kernels_for(x):
            return self.on_subgrids(x) if kernel == "subgrids" else self.direct(x)
        return super().forward(x)

    def on_subgrids(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution computed on space-to-batch sub-grids (see the class docstring)."""
        return depthwise_on_subgrids(x, self.weight, self.bias, self.dilation[0])

    def direct(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution computed by this project's loops (see the class docstring)."""
        return depthwise_direct(x, self.weight, self.stride[0], self.padding[0], self.dilation[0])


def use_depthwise_kernel(model: nn.Module, kernel: str | DepthwisePolicy) -> int:
    """Set every :class:`DepthwiseConv2d` of ``model`` to ``kernel`` (a name of
    :data:`DEPTHWISE_KERNELS` or a policy); returns how many."""
    if isinstance(kernel, str) and kernel not in DEPTHWISE_KERNELS:
        raise ValueError(f"unknown depthwise kernel {kernel!r}: use one of {', '.join(DEPTHWISE_KERNELS)}")
    count = 0
    for module in model.modules():
        if isinstance(module, DepthwiseConv2d):
            module.kernel = kernel
            count += 1
    return count


class SepConv(nn.Module):
    """``repeats`` x [depthwise k x k (stride, dilation), pointwise 1x1, BN, ReLU].

    The first repeat maps c_in -> c_out, later ones c_out -> c_out; every
    repeat uses the same stride (so stride 2 with 2 repeats downsamples by 4).
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dilation: int,
                 repeats: int):
        super().__init__()
        padding = dilation * (kernel - 1) // 2
        self.op = nn.Sequential()
        for i in range(repeats):
            c = c_in if i == 0 else c_out
            self.op.add_module(f"sep_{i}", nn.Sequential(
                DepthwiseConv2d(c, c, kernel, stride=stride, padding=padding, dilation=dilation,
                                groups=c, bias=False),
                nn.Conv2d(c, c_out, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=False),
            ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def _sep_op(kernel: int, dilation: int) -> Callable[[int, int, int, int], nn.Module]:
    def make(c_in: int, c_out: int, stride: int, repeats: int) -> nn.Module:
        return SepConv(c_in, c_out, kernel, stride, dilation, repeats)
    return make


class GlobalAveragePool(nn.Module):
    """Image-level context: spatial mean -> conv_bn_relu 1x1 -> resize back (stride ignored)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1x1 = conv_bn_relu(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        # The original resizes the 1x1 map bilinearly, which gives the same value at every
        # position (up to rounding): a broadcast view costs nothing, and unlike
        # interpolate's NCHW output it keeps the sum it feeds in the input's memory format
        # (a channels_last + NCHW sum ran 10x slower and left the cell's output NCHW).
        return self.conv1x1(pooled).expand(-1, -1, *x.shape[2:])


class MaxPool(nn.Module):
    """Conv 1x1 -> BN (no ReLU) -> 3x3 max pooling with the given stride."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1x1 = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.pool = nn.MaxPool2d(3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv1x1(x))


def _channel_factor(c_in: int, c_out: int, name: str) -> int:
    if c_out % c_in:
        raise ValueError(f"{name}: output channels {c_out} must be a multiple of input channels {c_in}")
    return c_out // c_in


class SkipConnect(nn.Module):
    """Identity, with channels tiled c_out / c_in times (stride ignored, as in the original)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.factor = _channel_factor(c_in, c_out, "skip_connect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(1, self.factor, 1, 1) if self.factor > 1 else x


class Zero(nn.Module):
    """Zeros shaped like the channel-tiled input, subsampled when stride > 1."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.factor = _channel_factor(c_in, c_out, "none")
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.repeat(1, self.factor, 1, 1)
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return x.mul(0.0)


OPS: dict[str, Callable[[int, int, int, int], nn.Module]] = {
    "conv1x1": _conv1x1,
    "conv3x3": _conv_op(dilation=1),
    "conv3x3_dil3": _conv_op(dilation=3),
    "conv3x3_dil12": _conv_op(dilation=12),
    "sep_conv_3x3": _sep_op(kernel=3, dilation=1),
    "sep_conv_5x5": _sep_op(kernel=5, dilation=1),
    "sep_conv_3x3_dil3": _sep_op(kernel=3, dilation=3),
    "sep_conv_5x5_dil6": _sep_op(kernel=5, dilation=6),
    "global_average_pool": lambda c_in, c_out, stride, repeats: GlobalAveragePool(c_in, c_out),
    "max_pool_3x3": lambda c_in, c_out, stride, repeats: MaxPool(c_in, c_out, stride),
    "skip_connect": lambda c_in, c_out, stride, repeats: SkipConnect(c_in, c_out),
    "none": lambda c_in, c_out, stride, repeats: Zero(c_in, c_out, stride),
}


# ---------------------------------------------------------------------------
# Aggregations (WACV templates): combine two inputs into c_out channels.
# ---------------------------------------------------------------------------

class Adapt(nn.Module):
    """Bring two inputs to c_out channels (1x1 conv_bn_relu where needed) and one size.

    ``larger=True`` resizes the smaller input up to the larger one; ``False``
    resizes the larger down to the smaller.
    """

    def __init__(self, c_in0: int, c_in1: int, c_out: int, larger: bool):
        super().__init__()
        self.larger = larger
        if c_in0 != c_out:
            self.conv0 = conv_bn_relu(c_in0, c_out, 1)
        if c_in1 != c_out:
            self.conv1 = conv_bn_relu(c_in1, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, "conv0"):
            x = self.conv0(x)
        if hasattr(self, "conv1"):
            y = self.conv1(y)
        return match_sizes(x, y, self.larger)


class ParamSum(nn.Module):
    """a * x + b * y with learnable per-channel a, b (initialised to ones)."""

    def __init__(self, c_in0: int, c_in1: int, c_out: int, larger: bool):
        super().__init__()
        self.adapt = Adapt(c_in0, c_in1, c_out, larger)
        self.a = nn.Parameter(torch.ones(c_out))
        self.b = nn.Parameter(torch.ones(c_out))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self.adapt(x, y)
        return self.a[None, :, None, None] * x + self.b[None, :, None, None] * y


class ConcatReduce(nn.Module):
    """Concatenate -> BN(2 c_out) -> ReLU -> conv 1x1 back to c_out (no bias)."""

    def __init__(self, c_in0: int, c_in1: int, c_out: int, larger: bool):
        super().__init__()
        self.adapt = Adapt(c_in0, c_in1, c_out, larger)
        self.conv1x1 = nn.Sequential(
            nn.BatchNorm2d(2 * c_out),
            nn.ReLU(inplace=False),
            nn.Conv2d(2 * c_out, c_out, 1, bias=False),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # BN -> ReLU -> conv 1x1 of the concatenation, computed on its two halves: BN and
        # ReLU act per channel, and a 1x1 conv of a concatenation is the sum of 1x1 convs
        # of its parts (same terms, summed in another order). No concatenated copy forward,
        # no split of its gradient backward: measured 5 % of a WACV decoder training step
        # (AMD EPYC held to AVX2, batch 16 at 64x64).
        x, y = self.adapt(x, y)
        bn, _, conv = self.conv1x1
        if type(bn) is not nn.BatchNorm2d:
            # another module there (a per-channel affine once exported, a BatchNorm that
            # all-reduces its statistics across processes): its own forward, on the concatenation
            return self.conv1x1(torch.cat([x, y], dim=1))
        halves = batch_norm_parts(bn, [x, y])
        c = x.shape[1]
        return (F.conv2d(F.relu(halves[0]), conv.weight[:, :c], conv.bias)
                + F.conv2d(F.relu(halves[1]), conv.weight[:, c:]))


def batch_norm_parts(bn: nn.BatchNorm2d, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """``bn`` applied to the channel concatenation of ``parts``, returned part by part
    (BatchNorm normalises each channel on its own): nn.BatchNorm2d's forward, running
    statistics and batch count included, on slices of its parameters and buffers."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    out, start = [], 0
    for part in parts:
        sl = slice(start, start + part.shape[1])
        start = sl.stop
        out.append(F.batch_norm(
            part, bn.running_mean[sl] if keep and bn.running_mean is not None else None,
            bn.running_var[sl] if keep and bn.running_var is not None else None,
            bn.weight[sl] if bn.weight is not None else None, bn.bias[sl] if bn.bias is not None else None,
            use_batch, factor, bn.eps))
    if start != bn.num_features:
        raise ValueError(f"the parts have {start} channels, the BatchNorm {bn.num_features}")
    return out


AGG_OPS: dict[str, Callable[[int, int, int, bool], nn.Module]] = {
    "psum": ParamSum,
    "cat": ConcatReduce,
}
