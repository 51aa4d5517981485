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
Here both passes are written out as torch operators without autograd, writing
into preallocated buffers through views bound once: eight to nine operators per
LSTM cell and direction. Everything that does not depend on the recurrence (gate
derivatives, the heads, the weight gradients) is done for all steps at once.
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

        # -- buffers ----------------------------------------------------------------------
        def z(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, **opts)

        # An LSTM input row is [input_t, h_t-1, 1], padded to a multiple of 16 floats:
        # matrix-vector products on aligned, column-major operands run ~1.5x faster.
        width = -(-(2 * h + 1) // 16) * 16
        self.wt = [z(width, 4 * h) for _ in range(layers)]           # [W_ih | W_hh | b]^T: forward
        self.w = [z(4 * h, width) for _ in range(layers)]            # [W_ih | W_hh | 0]: backward
        self.xh = [z(steps + 1, width) for _ in range(layers)]       # row t: [input_t, h_t-1, 1, 0...]
        for xh in self.xh:
            xh[:, 2 * h] = 1.0
        self.act = [z(steps, 4 * h) for _ in range(layers)]          # gates i, f, g, o (torch order)
        self.c = [z(steps + 1, h) for _ in range(layers)]            # row t + 1: c_t; row 0: zeros
        self.tc = [z(steps, h) for _ in range(layers)]               # tanh(c_t)
        self.head_w, self.head_b = z(total, h), z(total)
        # dL/dc_t -> dL/d(pre-activations of i, f, g), and dL/dh_t -> dL/d(pre-activation of o)
        self.gci = [z(steps, 3, h) for _ in range(layers)]           # (g, c_t-1, i) * gate derivative
        self.tco = [z(steps, h) for _ in range(layers)]              # tanh(c_t) * o (1 - o)
        self.ot = [z(steps, h) for _ in range(layers)]               # dh_t -> dc_t: o (1 - tanh(c_t)^2)
        self.dz = [z(steps, 4 * h) for _ in range(layers)]           # dL/d(gate pre-activations)
        self.dxh = [z(steps + 1, width) for _ in range(layers)]      # dL/dxh; row `steps` stays 0
        self.dcp = [z(steps + 1, h) for _ in range(layers)]          # dL/dc_t-1 via step t; row `steps`: 0
        self.dh, self.dc = z(h), z(h)
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

        # -- views bound once, one tuple per (step, layer): the loops only call operators --
        top = layers - 1
        self._fwd: list[tuple[torch.Tensor, ...]] = []
        for t in range(steps):
            for layer in range(layers):
                a, xh = self.act[layer][t], self.xh[layer]
                feed = self.xh[0][t + 1, :h] if layer == top else self.xh[layer + 1][t, :h]
                self._fwd.append((self.wt[layer].t(), xh[t], a, a[:2 * h], a[2 * h:3 * h], a[3 * h:],
                                  a[:h], a[h:2 * h], self.c[layer][t], self.c[layer][t + 1],
                                  self.tc[layer][t], xh[t + 1, h:2 * h], feed))
        self._bwd: list[tuple[Any, ...]] = []
        for t in reversed(range(steps)):
            for layer in reversed(range(layers)):
                above = (self.dout[t], self.dxh[0][t + 1, :h]) if layer == top else \
                    (self.dxh[layer + 1][t, :h],)
                dz = self.dz[layer][t]
                self._bwd.append((self.dxh[layer][t + 1, h:2 * h], above, self.dcp[layer][t + 1],
                                  self.ot[layer][t], self.gci[layer][t], dz.view(4, h)[:3],
                                  self.tco[layer][t], dz.view(4, h)[3], self.act[layer][t, h:2 * h],
                                  self.dcp[layer][t], self.w[layer].t(), dz, self.dxh[layer][t]))
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

        for (w, xh_t, a, a_if, a_g, a_o, a_i, a_f, c_prev, c_t, tc_t, h_t, feed) in self._fwd:
            torch.mv(w, xh_t, out=a)
            torch.sigmoid(a_if, out=a_if)
            torch.tanh(a_g, out=a_g)
            torch.sigmoid(a_o, out=a_o)
            torch.mul(a_f, c_prev, out=c_t)
            c_t.addcmul_(a_i, a_g)
            torch.tanh(c_t, out=tc_t)
            torch.mul(a_o, tc_t, out=h_t)
            feed.copy_(h_t)

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

        dh, dc = self.dh, self.dc
        for (dh_rec, above, dc_next, ot, gci, dz_ifg, tco, dz_o, f, dc_prev, w_t, dz, dxh_t) in self._bwd:
            torch.add(dh_rec, above[0], out=dh)
            if len(above) == 2:
                dh.add_(above[1])
            torch.addcmul(dc_next, dh, ot, out=dc)
            torch.mul(gci, dc, out=dz_ifg)
            torch.mul(tco, dh, out=dz_o)
            torch.mul(dc, f, out=dc_prev)
            torch.mv(w_t, dz, out=dxh_t)

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
