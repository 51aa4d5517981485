"""Depthwise convolutions computed by this project's own loops (:mod:`nasseg.models._depthwise`)
on NHWC float32 CPU tensors, as an autograd function: :func:`depthwise_direct`.

The same sums as ``F.conv2d(x, w, None, stride, padding, dilation, groups=channels)``,
in another order (float32 rounding differs; a test compares both against float64). It
exists because oneDNN's depthwise kernels are slow for some shapes: dilated kernels
above all (a 5x5 kernel at dilation 6 on 16x48x64x64, 2-core AMD EPYC with AVX2 only,
forward and backward: 261 ms in oneDNN, 25 ms here) and small maps. Which of the implementations
runs for a given input is measured per shape (:mod:`nasseg.search.kernels`); the
authors' code has only the framework's convolution.
"""
from __future__ import annotations

import torch

from . import _depthwise

__all__ = ["depthwise_direct", "direct_supported"]


def direct_supported(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int) -> bool:
    """Whether :func:`depthwise_direct` can compute this convolution: float32 on the CPU,
    one filter per channel, no bias (kernel size, stride, padding and dilation: one number
    each)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 4 and bias is None and groups == x.shape[1] == weight.shape[0]
            and weight.shape[1] == 1 and weight.shape[2] == weight.shape[3])


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``x`` laid out NHWC (channels_last), copied only if it is not already."""
    return x.contiguous(memory_format=torch.channels_last)


def _threads() -> int:
    return max(1, torch.get_num_threads())


class _DepthwiseDirect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                dilation: int) -> torch.Tensor:
        x = _nhwc(x)
        n, c, h, w = x.shape
        kh, kw = weight.shape[-2:]
        oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
        ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
        taps = weight.detach()[:, 0].permute(1, 2, 0).contiguous()   # [kh, kw, c]
        y = torch.empty((n, c, oh, ow), dtype=x.dtype, memory_format=torch.channels_last)
        _depthwise.forward(x.data_ptr(), taps.data_ptr(), y.data_ptr(), n, h, w, c, kh, kw,
                           stride, padding, dilation, _threads())
        ctx.save_for_backward(x, taps)
        ctx.conv = (stride, padding, dilation)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, taps = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        n, c, h, w = x.shape
        kh, kw = taps.shape[:2]
        grad = _nhwc(grad)
        threads = _threads()
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(x, memory_format=torch.channels_last)
            if stride == 1:   # a convolution of the gradient with the flipped kernel
                flipped = taps.flip(0, 1).contiguous()
                _depthwise.forward(grad.data_ptr(), flipped.data_ptr(), gx.data_ptr(), n, grad.shape[2],
                                   grad.shape[3], c, kh, kw, 1, dilation * (kh - 1) - padding, dilation, threads)
            else:
                _depthwise.input_grad(grad.data_ptr(), taps.data_ptr(), gx.data_ptr(), n, h, w, c, kh, kw,
                                      stride, padding, dilation, threads)
        if ctx.needs_input_grad[1]:
            g = torch.empty((kh, kw, c), dtype=x.dtype)
            scratch = torch.empty((max(threads - 1, 1), kh, kw, c), dtype=x.dtype)
            _depthwise.weight_grad(grad.data_ptr(), x.data_ptr(), g.data_ptr(), scratch.data_ptr(), n, h, w, c,
                                   kh, kw, stride, padding, dilation, threads)
            gw = g.permute(2, 0, 1).unsqueeze(1).contiguous()   # [c, 1, kh, kw]
        return gx, gw, None, None, None


def depthwise_direct(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                     dilation: int) -> torch.Tensor:
    """``F.conv2d(x, weight, None, stride, padding, dilation, groups=channels)`` by this
    project's loops (see the module docstring; :func:`direct_supported` says when it
    applies). The result is NHWC (channels_last), whatever the input's layout."""
    return _DepthwiseDirect.apply(x, weight, stride, padding, dilation)
