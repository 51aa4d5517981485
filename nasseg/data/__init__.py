"""Datasets: official-layout converters, synthetic stand-ins and loaders.

    prepare_dataset("cityscapes", raw, out)        # official layout -> prepared format
    synthesize_dataset("cityscapes", out, num_images=48, seed=0, height=128, width=256)
    ds = PreparedDataset(out, "train", train_transform(AugmentParams(crop_size=512)))
    loader = make_loader(ds, batch_size=8, train=True, workers=2)
    meta_train, meta_val = search_datasets(out, "train", "train", AugmentParams())

Every input problem raises :class:`DataError` naming the file.
"""
from .classes import DATASETS, IGNORE_INDEX, OFFICIAL_SPLIT_SIZES
from .datasets import PreparedDataset, read_list, read_meta
from .errors import DataError
from .loaders import make_loader, meta_split_indices, search_datasets
from .prepare import PrepareParams, prepare_dataset
from .synthesize import DataParams, SynthesizeParams, SynthSize, synthesize_dataset
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, AugmentParams, eval_transform,
                         train_transform, val_transform)

__all__ = [
    "DATASETS", "IGNORE_INDEX", "OFFICIAL_SPLIT_SIZES", "DataError", "PreparedDataset",
    "read_list", "read_meta", "make_loader", "meta_split_indices", "search_datasets",
    "PrepareParams", "prepare_dataset", "DataParams", "SynthesizeParams", "SynthSize",
    "synthesize_dataset", "AugmentParams", "IMAGENET_MEAN", "IMAGENET_STD", "train_transform",
    "val_transform", "eval_transform",
]
