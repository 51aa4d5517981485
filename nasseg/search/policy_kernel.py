"""Forward and backward passes of the default-feedback LSTM controller, written out.

What: :class:`PolicyKernel` scores actions under an LSTM controller whose next
input is its own previous output (the original's feedback,
``strategy.action_embedding: false``) and computes the gradient of a
policy-gradient loss

    L = sum_j w_j * log p(a_j) + entropy_weight * H

(``H``: the policy's entropy, summed over decisions) with respect to every
controller parameter, writing it into the parameters' ``.grad`` so that torch's
gradient clipping and Adam apply unchanged.

Why: the original's PPO update takes one Adam step per buffered architecture,
100 per update, and each step needs a forward and a backward pass of the
controller over the whole decision sequence (46 LSTM steps for WACV, 23 for
CVPR). Through autograd that is some 2,000 tiny operators per step, and the
per-operator dispatch and graph bookkeeping cost far more than the arithmetic.
Here both passes are written out without autograd, into preallocated buffers:
the recurrence itself runs in C (:mod:`nasseg.search._lstm`: one matrix-vector
product and one fused element-wise loop per cell step), and everything that does
not depend on the recurrence (gate derivatives, the heads, the weight gradients)
is done in torch for all steps at once.
With this feedback the trajectory does not depend on the chosen actions, so one
pass serves every sample of a minibatch, whatever its size. (Torch rather than
numpy: numpy's own BLAS threads stall for milliseconds beside torch's OpenMP
pool, while torch's operators follow ``torch.set_num_threads``.)

Where it differs from the original: not in the maths (the same losses and
gradients; ``tests/test_strategies.py`` checks them against autograd), only in
float32 rounding. The action-embedding (ENAS) feedback has no kernel: its
trajectory depends on the actions, and it keeps the autograd path.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _lstm

__all__ = ["PolicyKernel"]


class PolicyKernel:
    """Scores and gradients for one default-feedback controller (see the module docstring).

    :meth:`forward` runs the controller with its current parameters; :meth:`log_probs`
    and :attr:`entropy` read the result; :meth:`backward` then sets every parameter's
    ``.grad``. Parameters are read at each :meth:`forward`, so the kernel stays valid
    while an optimiser updates them in place.
    """

    def __init__(self, controller: nn.Module) -> None:
        if controller.action_embedding:
            raise ValueError("PolicyKernel needs the default feedback (action_embedding: false); "
                             "with action embeddings the trajectory depends on the actions")
        self.controller = controller
        self.cells: list[nn.LSTMCell] = list(controller.cells)
        self.heads: list[nn.Linear] = list(controller.heads.values())
        covered = {id(controller.start)} | {id(p) for m in self.cells + self.heads for p in m.parameters()}
        unknown = [n for n, p in controller.named_parameters() if id(p) not in covered]
        if unknown:
            raise ValueError(f"PolicyKernel does not know the controller parameters {unknown}")

        if controller.start.dtype != torch.float32:
            raise ValueError(f"PolicyKernel runs float32 controllers, got {controller.start.dtype}")
        h = controller.hidden_size
        layers = len(self.cells)
        decisions = controller.decisions
        steps = controller.num_pools + len(decisions)
        self.hidden, self.steps = h, steps
        opts: dict[str, Any] = {"dtype": controller.start.dtype}

        # Decisions with a choice (size > 1), in sampling order; one-way decisions
        # take an LSTM step but have no head and add nothing to the loss.
        scored = [i for i, d in enumerate(decisions) if d.size > 1]
        self.positions = torch.tensor([decisions[i].position for i in scored])
        self.out_rows = torch.tensor([controller.num_pools + i for i in scored])
        # The heads packed into one matrix (ModuleDict order); decision d scores its
        # choices with columns offset[d.head] .. offset[d.head] + d.size - 1.
        offsets: dict[str, int] = {}
        self.head_slices: list[slice] = []
        total = 0
        for name, head in controller.heads.items():
            offsets[name] = total
            self.head_slices.append(slice(total, total + head.out_features))
            total += head.out_features
        sizes = torch.tensor([decisions[i].size for i in scored])
        k = torch.arange(int(sizes.max()))
        self.valid = k[None, :] < sizes[:, None]                                     # [Ds, Kmax]
        starts = torch.tensor([offsets[decisions[i].head] for i in scored])
        self.cols = torch.where(self.valid, starts[:, None] + k[None, :], 0)         # [Ds, Kmax]
        self.rows = torch.arange(len(scored))[:, None].expand_as(self.cols)
        self.valid_rows, self.valid_cols = self.rows[self.valid], self.cols[self.valid]

        # -- buffers: one tensor per kind, [layers, ...]; the lists index its layers ----------
        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, **opts)

        # An LSTM input row is [input_t, h_t-1, 1], padded to a multiple of 16 floats
        # (aligned rows for the vectorised matrix-vector products).
        width = -(-(2 * h + 1) // 16) * 16
        self._wt = z(layers, width, 4 * h)       # [W_ih | W_hh | b]^T: forward
        self._w = z(layers, 4 * h, width)        # [W_ih | W_hh | 0]: backward
        self._xh = z(layers, steps + 1, width)   # row t: [input_t, h_t-1, 1, 0...]
        self._xh[:, :, 2 * h] = 1.0
        self._act = z(layers, steps, 4 * h)      # gates i, f, g, o (torch order), activated
        self._c = z(layers, steps + 1, h)        # row t + 1: c_t; row 0: zeros
        self._tc = z(layers, steps, h)           # tanh(c_t)
        # dL/dc_t -> dL/d(pre-activations of i, f, g), and dL/dh_t -> dL/d(pre-activation of o)
        self._gci = z(layers, steps, 3, h)       # (g, c_t-1, i) * gate derivative
        self._tco = z(layers, steps, h)          # tanh(c_t) * o (1 - o)
        self._ot = z(layers, steps, h)           # dh_t -> dc_t: o (1 - tanh(c_t)^2)
        self._dz = z(layers, steps, 4 * h)       # dL/d(gate pre-activations)
        self._dxh = z(layers, steps + 1, width)  # dL/dxh; row `steps` stays 0
        self._dcp = z(layers, steps + 1, h)      # dL/dc_t-1 via step t; row `steps`: 0
        self.wt, self.w, self.xh, self.act, self.c, self.tc = (
            list(b) for b in (self._wt, self._w, self._xh, self._act, self._c, self._tc))
        self.gci, self.tco, self.ot, self.dz, self.dxh, self.dcp = (
            list(b) for b in (self._gci, self._tco, self._ot, self._dz, self._dxh, self._dcp))
        self.head_w, self.head_b = z(total, h), z(total)
        self.dh = z(h)
        self.dout = z(steps, h)                                      # dL/d(top output) from the heads
        # Every gradient lives in one flat buffer (so clipping is one norm and one scale);
        # the heads' weights and biases each form one block, in the packed order.
        sizes_flat = [h] + [p.numel() for c in self.cells for p in c.parameters()] + [total * h, total]
        self.flat_grad = z(sum(sizes_flat))
        blocks = list(self.flat_grad.split(sizes_flat))
        self.grad_start = blocks[0].view(1, h)
        self.grad_cells = [[blocks[1 + 4 * k + j].view(p.shape) for j, p in enumerate(c.parameters())]
                           for k, c in enumerate(self.cells)]
        self.grad_head_w, self.grad_head_b = blocks[-2].view(total, h), blocks[-1]
        self.grads = [(controller.start, self.grad_start)]
        for cell, grads in zip(self.cells, self.grad_cells):
            self.grads += list(zip(cell.parameters(), grads))
        for head, sl in zip(self.heads, self.head_slices):
            self.grads += [(head.weight, self.grad_head_w[sl]), (head.bias, self.grad_head_b[sl])]

        # numpy views of the buffers (same memory) for the C loops of nasseg.search._lstm
        self._forward_args = tuple(b.numpy() for b in (self._wt, self._xh, self._act, self._c, self._tc))
        self._backward_args = tuple(b.numpy() for b in (self._w, self._act, self._ot, self._gci, self._tco,
                                                        self.dout, self._dz, self._dxh, self._dcp, self.dh))
        self._forwarded = False

    # -- forward -------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self) -> torch.Tensor:
        """Run the controller; returns log-probabilities [decisions with a choice, Kmax], -inf padded."""
        h = self.hidden
        for wt, w, cell in zip(self.wt, self.w, self.cells):
            w[:, :h] = cell.weight_ih
            w[:, h:2 * h] = cell.weight_hh
            wt[:2 * h] = w[:, :2 * h].t()
            torch.add(cell.bias_ih, cell.bias_hh, out=wt[2 * h])
        for head, sl in zip(self.heads, self.head_slices):
            self.head_w[sl] = head.weight
            self.head_b[sl] = head.bias
        self.xh[0][0, :h] = self.controller.start[0]

        _lstm.forward_steps(*self._forward_args, h, self.steps)

        # What the backward pass needs that does not depend on the recurrence, all steps at once.
        for layer in range(len(self.cells)):
            a, tc, gci = self.act[layer], self.tc[layer], self.gci[layer]
            i, f, g, o = (a[:, k * h:(k + 1) * h] for k in range(4))
            torch.mul(g, i * (1 - i), out=gci[:, 0])            # dc -> dz_i: g * sigmoid'
            torch.mul(self.c[layer][:-1], f * (1 - f), out=gci[:, 1])   # dc -> dz_f: c_t-1 * sigmoid'
            torch.mul(i, 1 - g * g, out=gci[:, 2])              # dc -> dz_g: i * tanh'
            torch.mul(tc, o * (1 - o), out=self.tco[layer])     # dh -> dz_o: tanh(c) * sigmoid'
            torch.mul(o, 1 - tc * tc, out=self.ot[layer])       # dh -> dc: o * tanh'

        # The heads, for every scored decision at once.
        self.outputs = self.xh[-1][1:, h:2 * h][self.out_rows]          # [Ds, H] top outputs
        full = torch.addmm(self.head_b, self.outputs, self.head_w.t())
        logits = full[self.rows, self.cols].masked_fill_(~self.valid, float("-inf"))
        self.logp = torch.log_softmax(logits, dim=1)
        self.p = self.logp.exp()
        self.logp0 = self.logp.masked_fill(~self.valid, 0.0)            # -inf -> 0 for p log p
        self.entropies = -(self.p * self.logp0).sum(dim=1)
        self._forwarded = True
        return self.logp

    def chosen(self, actions: torch.Tensor) -> torch.Tensor:
        """The choices of ``actions`` [B, action length] at the scored decisions: [B, Ds]."""
        return torch.as_tensor(actions, dtype=torch.long)[:, self.positions]

    def log_probs(self, chosen: torch.Tensor) -> torch.Tensor:
        """log p(action) [B] for choices [B, Ds] (from :meth:`chosen`), after :meth:`forward`."""
        return self.logp.gather(1, chosen.t()).sum(dim=0)

    @property
    def entropy(self) -> float:
        """The policy's entropy (summed over decisions), after :meth:`forward`."""
        return float(self.entropies.sum())

    # -- backward ------------------------------------------------------------------------

    @torch.no_grad()
    def backward(self, weights: torch.Tensor, chosen: torch.Tensor, entropy_weight: float = 0.0) -> None:
        """Set ``.grad`` of every controller parameter to dL/dparam, at the parameters of the
        last :meth:`forward`, for ``L = sum_j weights[j] * log p(chosen[j]) + entropy_weight * H``."""
        if not self._forwarded:
            raise RuntimeError("PolicyKernel.backward() needs a forward() first")
        self._forwarded = False
        h = self.hidden
        # dL/dlogits: sum_j w_j (onehot(a_j) - p), and for the entropy, -p (log p + H_d).
        weights = torch.as_tensor(weights, dtype=self.p.dtype)
        g = torch.zeros_like(self.p).scatter_add_(1, chosen.t(), weights.expand(chosen.shape[1], -1))
        g.sub_(self.p * weights.sum())
        if entropy_weight:
            g.sub_(entropy_weight * self.p * (self.logp0 + self.entropies[:, None]))
        gfull = self.p.new_zeros(g.shape[0], self.head_w.shape[0])
        gfull[self.valid_rows, self.valid_cols] = g[self.valid]
        torch.mm(gfull.t(), self.outputs, out=self.grad_head_w)
        torch.sum(gfull, dim=0, out=self.grad_head_b)
        self.dout[self.out_rows] = gfull @ self.head_w

        _lstm.backward_steps(*self._backward_args, h, self.steps)

        for layer, grads in enumerate(self.grad_cells):
            dz, xh = self.dz[layer], self.xh[layer][:self.steps]
            torch.mm(dz.t(), xh[:, :h], out=grads[0])
            torch.mm(dz.t(), xh[:, h:2 * h], out=grads[1])
            torch.sum(dz, dim=0, out=grads[2])
            grads[3].copy_(grads[2])
        self.grad_start.copy_(self.dxh[0][0:1, :h])
        for p, g in self.grads:
            if p.grad is not g:
                p.grad = g

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """``torch.nn.utils.clip_grad_norm_`` on the gradients of the last :meth:`backward`,
        as one norm and one scale of the flat buffer that holds them."""
        total = torch.linalg.vector_norm(self.flat_grad)
        self.flat_grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total
