"""Proxy training, unit by unit: early stopping (against the original rule), Polyak averaging,
the loss, the failure rule, and the evaluator's optimiser, distillation and precision settings."""
from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import nasseg
from nasseg.data import DataError
from nasseg.models import TrainOutput
from nasseg.search.config import (DistillationConfig, EarlyStoppingConfig, ProxyConfig, StageOneConfig,
                                  StageTwoConfig)
from nasseg.search.data import ProxyData
from nasseg.search.early_stopping import EarlyStopping
from nasseg.search.evaluator import ProxyEvaluator
from nasseg.search.failures import (ArchitectureFailure, NonFiniteLoss, Status, architecture_status,
                                    candidate)
from nasseg.search.features import Compute
from nasseg.search.losses import SegmentationLoss
from nasseg.search.polyak import Polyak

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- early stopping ------------------------------------------------------------------

class OriginalTaskPerformer:
    """The reference: the original's rule (``TaskPerformer`` in ``src/helpers/utils.py`` of
    DrSleep/nas-segm-pytorch), transcribed; ``np.random.uniform`` is the injected ``uniform``."""

    def __init__(self, maxval: float, delta: float, uniform: Callable[[float, float], float]):
        self.maxval = maxval
        self.delta = delta
        self.scheduler = {100: 0.9, 200: 0.8, 300: 0.7, 400: 0.6}
        self.n_steps = 0
        self.decay = 0.99
        self.uniform = uniform

    def _update_delta(self) -> None:
        mult = self.scheduler.get(self.n_steps, 1.0)
        self.delta *= mult
        self.n_steps += 1

    def _update_maxval(self, newval: float) -> None:
        self.maxval = self.decay * self.maxval + (1.0 - self.decay) * newval

    def step(self, newval: float) -> bool:
        self._update_delta()
        self._update_maxval(newval)
        if newval > self.maxval:
            self.n_steps += 1
            return True
        prct = 1.0 - self.uniform(0.0, self.delta)
        if newval > (self.maxval * prct):
            return True
        return False


def reward_stream(n: int, seed: int) -> list[float]:
    """Rewards that drift upwards with noise: some beat the running average, some do not."""
    g = random.Random(seed)
    return [min(1.0, max(0.0, 0.2 + 0.4 * i / n + g.gauss(0.0, 0.15))) for i in range(n)]


def test_early_stopping_makes_the_original_decisions():
    config = EarlyStoppingConfig()   # the original's constants: 0.01, 0.99, 0.9 and its schedule
    rewards = reward_stream(900, seed=1)
    ours, ours_rng = EarlyStopping(config), random.Random(7)
    reference = OriginalTaskPerformer(maxval=0.01, delta=0.9, uniform=random.Random(7).uniform)
    decisions = [ours.step("s1e4", r, ours_rng) for r in rewards]
    assert decisions == [reference.step(r) for r in rewards]
    state = ours.state_dict()["s1e4"]
    assert (state["steps"], state["delta"], state["running"]) == (reference.n_steps, reference.delta,
                                                                  reference.maxval)
    # The stream exercises what sets the rule apart: stops and continues, the extra count when a
    # reward beats the average, and the delta schedule.
    assert 50 < decisions.count(False) < 850
    assert state["steps"] > len(rewards) and state["delta"] < 0.9 * 0.9


def test_early_stopping_points_are_independent_and_replay_matches():
    config = EarlyStoppingConfig()
    rewards = reward_stream(300, seed=2)
    stepped, rng = EarlyStopping(config), random.Random(0)
    references = {p: OriginalTaskPerformer(0.01, 0.9, random.Random(0).uniform) for p in ("s1e4", "s2e0")}
    for i, r in enumerate(rewards):
        point = ("s1e4", "s2e0")[i % 2]
        # one random stream per point in the reference, so compare states, not decisions, here
        stepped.step(point, r, rng)
        references[point].step(r)
    for point, ref in references.items():
        state = stepped.state_dict()[point]
        assert (state["steps"], state["delta"], state["running"]) == (ref.n_steps, ref.delta, ref.maxval)
    # The search process replays the workers' validations with record(): same state.
    replayed = EarlyStopping(config)
    for i, r in enumerate(rewards):
        replayed.record(("s1e4", "s2e0")[i % 2], r)
    assert replayed.state_dict() == stepped.state_dict()


def test_disabled_early_stopping_tracks_but_never_stops():
    es = EarlyStopping(EarlyStoppingConfig(enabled=False))
    assert all(es.step("s1e0", r, random.Random(0)) for r in [0.5] * 50 + [0.0] * 50)
    assert es.state_dict()["s1e0"]["steps"] > 100


# -- Polyak averaging ----------------------------------------------------------------

def test_polyak_update_and_write_back():
    module = nn.Linear(3, 2)
    start = [p.detach().clone() for p in module.parameters()]
    polyak = Polyak(module, decay=0.9)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    polyak.update()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    polyak.update()
    # avg = 0.9 * (0.9 * w0 + 0.1 * (w0 + 1)) + 0.1 * (w0 + 2) = w0 + 0.29
    expected = [w + 0.29 for w in start]
    for avg, want in zip(polyak.average, expected):
        torch.testing.assert_close(avg, want)
    polyak.write_back()
    for p, want in zip(module.parameters(), expected):
        torch.testing.assert_close(p.detach(), want)


def test_polyak_skips_frozen_parameters():
    module = nn.Linear(3, 2)
    module.bias.requires_grad_(False)
    assert len(Polyak(module, 0.99).params) == 1


# -- the loss ------------------------------------------------------------------------

def test_loss_cross_entropy_ignores_255_at_the_labels_resolution():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[:, :4] = 255
    loss = SegmentationLoss()(TrainOutput(logits, ()), labels)
    up = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss, F.cross_entropy(up, labels, ignore_index=255))


def test_loss_adds_weighted_auxiliary_heads_and_distillation():
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 4, 8, 8), (torch.randn(2, 4, 4, 4), torch.randn(2, 4, 8, 8))
    labels = torch.randint(0, 4, (2, 8, 8))
    teacher = torch.randn(2, 4, 8, 8)
    out = TrainOutput(logits, aux)
    base = SegmentationLoss()(out, labels)
    aux_terms = sum(F.cross_entropy(F.interpolate(a, size=(8, 8), mode="bilinear", align_corners=False),
                                    labels) for a in aux)
    torch.testing.assert_close(SegmentationLoss(aux_weight=0.15)(out, labels), base + 0.15 * aux_terms)
    torch.testing.assert_close(SegmentationLoss(distillation_weight=0.3)(out, labels, teacher),
                               base + 0.3 * F.mse_loss(logits, teacher))
    # aux_weight 0 switches the heads off; no teacher, no distillation term.
    torch.testing.assert_close(SegmentationLoss(aux_weight=0.0, distillation_weight=0.3)(out, labels), base)


# -- the failure rule ----------------------------------------------------------------

@pytest.mark.parametrize("exc, in_candidate, status", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False, Status.OOM),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"), False,
     Status.OOM),
    (NonFiniteLoss("training loss became nan"), False, Status.NAN),
    (RuntimeError("Given groups=1, weight of size [8, 16, 1, 1], expected input to have 16 channels"), True,
     Status.ERROR),
    (ValueError("Expected more than 1 value per channel when training"), True, Status.ERROR),
    # Not the architecture's: outside the candidate network, data, CUDA errors, other types.
    (RuntimeError("Given groups=1, weight of size [8, 16, 1, 1], expected input to have 16 channels"), False,
     None),
    (DataError("x.png: label values outside the classes: 40"), True, None),
    (RuntimeError("CUDA error: device-side assert triggered"), True, None),
    (IndexError("Target 40 is out of bounds."), True, None),
    (FileNotFoundError("weights.pth"), True, None),
    (TypeError("forward() missing 1 required positional argument"), True, None),
])
def test_architecture_status(exc, in_candidate, status):
    assert architecture_status(exc, in_candidate=in_candidate) == status


def test_candidate_scope_turns_own_failures_into_results_and_lets_the_rest_through():
    with pytest.raises(ArchitectureFailure) as failure:
        with candidate():
            nn.Conv2d(16, 8, 1)(torch.randn(1, 12, 4, 4))
    assert failure.value.status == Status.ERROR and failure.value.reason.startswith("RuntimeError: ")
    with pytest.raises(DataError):
        with candidate():
            raise DataError("labels.png: label values outside the classes: 40")


# -- the evaluator -------------------------------------------------------------------

NUM_CLASSES = 5


def tiny_data(n_train: int = 8, n_val: int = 4) -> ProxyData:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> TensorDataset:
        return TensorDataset(torch.randn(n, 3, 32, 32, generator=g),
                             torch.randint(0, NUM_CLASSES, (n, 32, 32), generator=g))

    train = split(n_train)
    return ProxyData(train_stage1=train, train_stage2=train, val=split(n_val), num_classes=NUM_CLASSES,
                     val_source="the tiny validation set")


def tiny_config(**changes: object) -> ProxyConfig:
    base = dict(agg_size=8, repeats=1, aux_cell=False, aux_weight=0.0, encoder_weights="none",
                val_batch_size=4, val_num_images=4, flops_input=(32, 32),
                stage1=StageOneConfig(epochs=1, batch_size=4, num_images=8, dec_weight_decay=3e-5),
                stage2=StageTwoConfig(epochs=1, batch_size=4, enc_optim="adam", dec_weight_decay=2e-5),
                early_stopping=EarlyStoppingConfig(enabled=False))
    return ProxyConfig(**{**base, **changes})


class CountingTeacher(nn.Module):
    """Quarter-resolution logits, counting the images it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return torch.zeros(len(x), NUM_CLASSES, x.shape[-2] // 4, x.shape[-1] // 4)


def evaluate_once(evaluator: ProxyEvaluator) -> Status:
    result = evaluator.evaluate(nasseg.published_genotype("wacv", "arch0"), 3,
                                EarlyStopping(evaluator.config.early_stopping))
    assert result.status.scored, result.reason
    return result.status


def test_decoder_weight_decay_in_both_stages(monkeypatch):
    made: list[dict] = []
    real_adam = torch.optim.Adam

    def recording_adam(params, **kw):
        made.append(kw)
        return real_adam(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", recording_adam)
    evaluate_once(ProxyEvaluator("wacv", tiny_config(), tiny_data()))
    # stage 1: the decoder's Adam; stage 2: the encoder's Adam, then the decoder's.
    assert [kw["weight_decay"] for kw in made] == [3e-5, StageTwoConfig().enc_weight_decay, 2e-5]


@pytest.mark.parametrize("stages, stage1_cached, stage2_images", [((1,), True, 0), ((1, 2), True, 8),
                                                                   ((2,), False, 8)])
def test_distillation_runs_in_the_listed_stages(stages, stage1_cached, stage2_images):
    teacher = CountingTeacher()
    config = tiny_config(distillation=DistillationConfig(teacher="torchvision_deeplabv3", stages=stages))
    evaluator = ProxyEvaluator("wacv", config, tiny_data(), teacher=teacher)
    assert (evaluator.cache.s1_teacher is not None) == stage1_cached
    cached = teacher.images
    assert cached == (8 if stage1_cached else 0)
    evaluate_once(evaluator)
    assert teacher.images - cached == stage2_images   # one stage-2 epoch of 8 images


def test_distillation_is_stage_one_only_by_default():
    assert DistillationConfig().stages == (1,)


def test_amp_does_nothing_on_cpu():
    fmt = torch.contiguous_format
    assert Compute.create("cpu", ProxyConfig(amp=True), fmt) == Compute.create("cpu", ProxyConfig(amp=False), fmt)
    assert not Compute.create("cpu", ProxyConfig(amp=True), fmt).amp
    assert ProxyConfig().amp is False   # the original trains in fp32


def test_validation_without_a_pixel_to_score_fails_before_any_architecture():
    data = tiny_data()
    images, labels = data.val.tensors
    data.val = TensorDataset(images, torch.full_like(labels, 255))
    with pytest.raises(DataError, match="the tiny validation set: no pixel of a scored class"):
        ProxyEvaluator("wacv", tiny_config(), data)


def test_the_evaluator_adam_is_fused_on_cpu_and_updates_as_foreach():
    from nasseg.search.config import ProxyConfig
    from nasseg.search.features import Compute

    kernel = Compute.create("cpu", ProxyConfig(), torch.contiguous_format).adam_kernel
    assert kernel == {"fused": True}
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    fused = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-5, **kernel)
    loop = torch.optim.Adam(twins, lr=1e-2, weight_decay=1e-5, foreach=True)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for group, opt in ((params, fused), (twins, loop)):
            for p, g in zip(group, grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(params, twins):
        torch.testing.assert_close(a, b)
