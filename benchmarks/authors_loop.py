"""The authors' per-architecture search loop, re-implemented as an in-run baseline.

What one architecture costs in DrSleep/nas-segm-pytorch (src/main_search.py,
src/engine/trainer.py, src/engine/inference.py), step for step, on this project's
networks (whose outputs equal theirs: tests/test_weights.py), so that
benchmarks/search_step.py can time both in one run on the same machine:

* a fresh encoder per architecture, its weights read from a file on disk
  (``create_encoder()``);
* stage 1 ("task 0") on encoder features computed once per search at batch 1
  (``populate_task0``), NCHW, fp32: the decoder's forward computes every 1x1
  "adapt" conv and, in training mode, every auxiliary head (also when their loss
  weight is 0), the output is resized to the features' size, then LogSoftmax and
  NLL; gradient clipping; Polyak averaging after every step over the decoder's
  parameters (a Python loop), written back after every epoch (``apply_polyak``);
  drop the last incomplete batch;
* stage 2 ("task 1"): the whole network on the training loader, labels
  nearest-resized to the output, both optimisers, Polyak over all parameters
  after every step;
* validation after ``val_every`` epochs (``validate``): the validation loader is read
  again each time, logits bilinearly resized to the labels, argmax and the
  confusion matrix in NumPy.

Nothing of the authors' code is imported; the facts come from reading it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasseg.data import make_loader
from nasseg.genotypes import Genotype
from nasseg.models import build_segmenter
from nasseg.search.config import ProxyConfig
from nasseg.search.data import ProxyData
from nasseg.spaces import space_of

IGNORE = 255


def populate_task0(encoder: nn.Module, data: ProxyData, n: int) -> dict[str, list[torch.Tensor] | torch.Tensor]:
    """Encoder features and labels of the stage-1 images at batch 1 (once per search)."""
    encoder.eval()
    feats, labels = [], []
    with torch.no_grad():
        for i in range(min(n, len(data.train_stage1))):
            image, label = data.train_stage1[i]
            out = encoder(image[None])
            feats.append(out)
            labels.append(F.interpolate(label[None, None].float(), size=out[0].shape[2:],
                                        mode="nearest").long()[:, 0])
    return {"feats": [torch.cat(level) for level in zip(*feats)], "y": torch.cat(labels)}


def _decoder_forward(model: nn.Module, feats: list[torch.Tensor]):
    """The authors' decoder forward: every adapt conv computed, aux heads in training mode."""
    decoder = model.decoder
    for k in range(1, len(feats) + 1):   # adapt convs this project skips when nothing reads them
        if hasattr(decoder, "read_inputs") and k - 1 not in decoder.read_inputs:
            getattr(decoder, f"adapt{k}")(feats[k - 1])
    return model.decode(feats, aux=True)


def _polyak(params: list[nn.Parameter], avg: list[torch.Tensor], decay: float) -> None:
    for p, a in zip(params, avg):
        a.mul_(decay).add_(p.data, alpha=1.0 - decay)


def _apply_polyak(params: list[nn.Parameter], avg: list[torch.Tensor]) -> None:
    for p, a in zip(params, avg):
        p.data.copy_(a)


def _loss(out, target: torch.Tensor, aux_weight: float) -> torch.Tensor:
    nll = nn.NLLLoss(ignore_index=IGNORE)
    loss = nll(F.log_softmax(out.logits, dim=1), target)
    if aux_weight > 0:
        for aux in out.aux_logits:
            aux = F.interpolate(aux, size=target.shape[1:], mode="bilinear", align_corners=False)
            loss = loss + aux_weight * nll(F.log_softmax(aux, dim=1), target)
    return loss


def validate(model: nn.Module, data: ProxyData, config: ProxyConfig) -> float:
    """mIoU over the validation images, the confusion matrix in NumPy."""
    model.eval()
    n = data.num_classes
    cm = np.zeros((n, n), dtype=np.int64)
    loader = make_loader(data.val, config.val_batch_size, train=False, workers=0)
    seen = 0
    with torch.no_grad():
        for image, target in loader:
            out = F.interpolate(model(image), size=target.shape[1:], mode="bilinear", align_corners=False)
            pred = out.numpy().argmax(axis=1).astype(np.uint8)
            gt = target.numpy().astype(np.uint8)
            keep = gt < n
            cm += np.bincount(n * gt[keep].astype(np.int64) + pred[keep], minlength=n * n).reshape(n, n)
            seen += len(image)
            if seen >= config.val_num_images:
                break
    iou = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
    return float(iou.mean())


def evaluate(genotype: Genotype, config: ProxyConfig, data: ProxyData, task0: dict,
             encoder_file: str, seed: int) -> float:
    """Train and score one architecture as the authors' loop does; return the last mIoU."""
    torch.manual_seed(seed)
    model = build_segmenter(genotype, data.num_classes, agg_size=config.agg_size, repeats=config.repeats,
                            aux_cell=config.aux_cell and space_of(genotype).has_aux_cell)
    model.encoder.load_state_dict(torch.load(encoder_file, weights_only=True))
    s1, s2 = config.stage1, config.stage2
    score = 0.0

    dec_params = list(model.decoder.parameters())
    optim = torch.optim.Adam(dec_params, lr=s1.lr, weight_decay=s1.dec_weight_decay)
    avg = [p.detach().clone() for p in dec_params]
    feats, y = task0["feats"], task0["y"]
    n = y.shape[0]
    bs = min(s1.batch_size, n)
    for epoch in range(s1.epochs):
        model.decoder.train()
        order = np.random.permutation(n)
        for i in range(n // bs):
            idx = torch.from_numpy(order[i * bs:(i + 1) * bs])
            out = _decoder_forward(model, [f[idx] for f in feats])
            out = out._replace(logits=F.interpolate(out.logits, size=y.shape[1:], mode="bilinear"))
            loss = _loss(out, y[idx], config.aux_weight)
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(dec_params, s1.grad_clip)
            optim.step()
            _polyak(dec_params, avg, s1.polyak_decay)
        _apply_polyak(dec_params, avg)
        if (epoch + 1) % s1.val_every == 0:
            score = validate(model, data, config)

    enc_params, all_params = list(model.encoder.parameters()), list(model.parameters())
    enc_optim = (torch.optim.Adam(enc_params, lr=s2.enc_lr, weight_decay=s2.enc_weight_decay)
                 if s2.enc_optim == "adam" else
                 torch.optim.SGD(enc_params, lr=s2.enc_lr, momentum=s2.enc_momentum,
                                 weight_decay=s2.enc_weight_decay))
    dec_optim = torch.optim.Adam(dec_params, lr=s2.dec_lr, weight_decay=s2.dec_weight_decay)
    avg = [p.detach().clone() for p in all_params]
    loader = make_loader(data.train_stage2, s2.batch_size, train=True, workers=0, seed=seed)
    for epoch in range(s2.epochs):
        model.train()
        for image, target in loader:
            out = model(image)
            target = F.interpolate(target[:, None].float(), size=out.logits.shape[2:],
                                   mode="nearest").long()[:, 0]
            loss = _loss(out, target, config.aux_weight)
            enc_optim.zero_grad()
            dec_optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(enc_params, s2.grad_clip)
            nn.utils.clip_grad_norm_(dec_params, s2.grad_clip)
            enc_optim.step()
            dec_optim.step()
            _polyak(all_params, avg, s2.polyak_decay)
        _apply_polyak(all_params, avg)
        if (epoch + 1) % s2.val_every == 0:
            score = validate(model, data, config)
    return score
