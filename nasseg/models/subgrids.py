"""Space-to-batch sub-grids: a stride-1 convolution with dilation d computed as an
undilated one on the d x d interleaved sub-grids of its input.

A dilation-d kernel only ever combines pixels d apart, so the input splits into d x d
sub-grids (a batch item each), each convolved on its own with the undilated kernel,
and the outputs interleave back: the same sums, term for term. Used by
:class:`nasseg.models.ops.DepthwiseConv2d` where that is faster than the dilated
kernel (measured per input shape by :mod:`nasseg.search.kernels`). The authors' code
has no such path.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["to_subgrids", "from_subgrids", "depthwise_on_subgrids", "memory_format_of"]


def _spans(size: int, d: int) -> list[tuple[int, int, int, int]]:
    """Rows ``[start, stop)`` of a map, as blocks of whole sub-grid rows: (start, stop,
    number of sub-grids the block's rows go to, first sub-grid row)."""
    whole, rest = divmod(size, d)
    spans = [(0, whole * d, d, 0)] if whole else []
    return spans + [(whole * d, size, rest, whole)] if rest else spans


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """``[n, c, h, w]`` viewed as ``[n, h, w, c]`` (a view, whatever the memory format)."""
    return image.permute(0, 2, 3, 1)


def _cells(grids: torch.Tensor, n: int, d: int) -> torch.Tensor:
    """``[n*d*d, c, hq, wq]`` sub-grids viewed as ``[n, d, d, hq, wq, c]`` (a view)."""
    return _pixels(grids).unflatten(0, (n, d, d))


def _grid_views(image: torch.Tensor, grids: torch.Tensor, d: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs of views (a block of ``image``, where its pixels go in ``grids``) that cover
    the image: the rows and columns of whole sub-grid rows, then the remainders."""
    n, c, h, w = image.shape
    pixels, cells = _pixels(image), _cells(grids, n, d)
    for r0, r1, sh, q0 in _spans(h, d):
        for c0, c1, sw, p0 in _spans(w, d):
            qh, qw = (r1 - r0) // sh, (c1 - c0) // sw
            yield (pixels[:, r0:r1, c0:c1].unflatten(2, (qw, sw)).unflatten(1, (qh, sh)).permute(0, 2, 4, 1, 3, 5),
                   cells[:, :sh, :sw, q0:q0 + qh, p0:p0 + qw])


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """NHWC (``channels_last``) if ``x`` is laid out so (and not also NCHW), else NCHW."""
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if nhwc else torch.contiguous_format


def to_subgrids(x: torch.Tensor, d: int) -> torch.Tensor:
    """``[n, c, h, w]`` -> its d x d sub-grids ``[n*d*d, c, ceil(h/d), ceil(w/d)]`` (a
    batch item each, in the input's memory format), zeros past the edge."""
    fmt = memory_format_of(x)
    n, c, h, w = x.shape
    hq, wq = -(-h // d), -(-w // d)
    grids = torch.empty((n * d * d, c, hq, wq), dtype=x.dtype, device=x.device, memory_format=fmt)
    cells = _cells(grids, n, d)
    if h % d:   # the last sub-grid row of the grids that start below the remainder
        cells[:, h % d:, :, hq - 1].zero_()
    if w % d:
        cells[:, :, w % d:, :, wq - 1].zero_()
    for block, where in _grid_views(x, grids, d):
        where.copy_(block)
    return grids


def from_subgrids(y: torch.Tensor, h: int, w: int, d: int, fmt: torch.memory_format) -> torch.Tensor:
    """The inverse of :func:`to_subgrids`: ``[n*d*d, c, hq, wq]`` -> ``[n, c, h, w]`` in
    memory format ``fmt``."""
    image = torch.empty((y.shape[0] // (d * d), y.shape[1], h, w), dtype=y.dtype, device=y.device,
                        memory_format=fmt)
    for block, where in _grid_views(image, y, d):
        block.copy_(where)
    return image


class _ToSubgrids(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, d: int) -> torch.Tensor:
        ctx.size, ctx.d, ctx.fmt = x.shape[2:], d, memory_format_of(x)
        return to_subgrids(x, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return from_subgrids(grad, *ctx.size, ctx.d, ctx.fmt), None


class _FromSubgrids(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, h: int, w: int, d: int, fmt: torch.memory_format) -> torch.Tensor:
        ctx.d = d
        return from_subgrids(y, h, w, d, fmt)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        return to_subgrids(grad, ctx.d), None, None, None, None


def depthwise_on_subgrids(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          d: int) -> torch.Tensor:
    """A stride-1 depthwise convolution with dilation ``d`` and 'same' padding, computed
    with the undilated kernel on the input's d x d space-to-batch sub-grids
    (:func:`to_subgrids`: zeros past the edge are what the dilated kernel reads there).
    The result keeps the input's memory format."""
    h, w = x.shape[2:]
    grids = _ToSubgrids.apply(x, d)
    y = F.conv2d(grids, weight, bias, padding=(weight.shape[-1] - 1) // 2, groups=x.shape[1])
    return _FromSubgrids.apply(y, h, w, d, memory_format_of(x))
