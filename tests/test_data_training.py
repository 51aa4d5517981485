"""The synthetic stand-ins are learnable but not trivial: a small WACV model trained
briefly on synthetic CityScapes clearly beats an untrained one on held-out images,
and the untrained one scores at chance level.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nasseg
from nasseg.data import (AugmentParams, PreparedDataset, make_loader, prepare_dataset,
                         synthesize_dataset, train_transform, val_transform)
from nasseg.metrics import confusion_matrix, segmentation_scores

NUM_CLASSES = 19


def evaluate(model, dataset):
    model.eval()
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    with torch.no_grad():
        for x, y in make_loader(dataset, 8, train=False, workers=0):
            logits = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear",
                                   align_corners=False)
            cm += confusion_matrix(logits.argmax(1), y, NUM_CLASSES, ignore_index=255)
    return segmentation_scores(cm)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_small_model_learns_synthetic_cityscapes(tmp_path):
    synthesize_dataset("cityscapes", tmp_path / "raw", num_images=48, seed=0, height=64,
                       width=128)
    prepare_dataset("cityscapes", tmp_path / "raw", tmp_path / "prepared")
    aug = AugmentParams(crop_size=64, resize_side=64, scale_range=(0.8, 1.25),
                        val_resize_side=64, val_crop_size=None)
    train = PreparedDataset(tmp_path / "prepared", "train", train_transform(aug))
    val = PreparedDataset(tmp_path / "prepared", "val", val_transform(aug))
    assert (len(train), len(val)) == (36, 12)

    torch.manual_seed(0)
    model = nasseg.build_segmenter(nasseg.published_genotype("wacv", "arch0"), NUM_CLASSES,
                                   agg_size=16, repeats=1)  # random (not ImageNet) weights
    before = evaluate(model, val)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = make_loader(train, 8, train=True, workers=0, seed=0)
    steps = 0
    while steps < 150:
        for x, y in loader:
            model.train()
            logits = F.interpolate(model(x).logits, size=y.shape[-2:], mode="bilinear",
                                   align_corners=False)
            loss = F.cross_entropy(logits, y, ignore_index=255)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            if steps == 150:
                break
    after = evaluate(model, val)

    chance = 1.0 / NUM_CLASSES
    assert before["miou"] < chance, before["miou"]
    assert after["miou"] > 0.3, after["miou"]
    assert after["miou"] > before["miou"] + 0.25
    assert after["pixel_acc"] > 0.6
