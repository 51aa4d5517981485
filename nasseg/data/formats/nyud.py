"""NYU Depth v2 (labelled subset): RGB + depth, and 40-class labels when the
class-mapping file (classMapping40.mat, Gupta et al.) is given.

nyu_depth_v2_labeled.mat is MATLAB v7.3 (HDF5, column-major): h5py shows
`images` as N x 3 x W x H; frames are transposed back to H x W (480 x 640,
upright). splits.mat holds 1-based trainNdxs (795) and testNdxs (654).
Depth is written as 16-bit PNG in millimetres, 0 = invalid.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..classes import IGNORE_INDEX, NYUD40_CLASSES, NYUD_RAW_CLASSES, class_info
from ..errors import DataError
from ..imageio import write_png
from ..matfile import (load_mat5, mat73_dataset, mat_variable, open_mat73, read_mat73_frame,
                       save_mat5, write_mat73)
from ..synthetic import class_styles, render_scene, split_counts, spread_things
from .base import Fingerprint, Plan, SplitLists, WriterParams
from .common import require_layout

LABELED = "nyu_depth_v2_labeled.mat"
SPLITS_FILE = "splits.mat"
MAPPING_FILE = "classMapping40.mat"
LAYOUT = f"""\
  {LABELED}    MATLAB v7.3: images 480x640x3x1449, depths 480x640x1449 (m), labels
  {SPLITS_FILE}                 MATLAB v5: trainNdxs (795), testNdxs (654), 1-based
  {MAPPING_FILE}          (optional) MATLAB v5: mapClass (1x894 -> 1..40), className"""
REQUIRED = [LABELED, SPLITS_FILE]
NUM_CLASSES = len(NYUD40_CLASSES)


def check_layout(raw: Path) -> None:
    require_layout(raw, "nyud", REQUIRED, LAYOUT)


def read_splits(path: Path) -> dict[str, np.ndarray]:
    """1-based frame indices of the train and test splits."""
    mat = load_mat5(path, "NYUD splits file")
    out = {}
    for split, var in (("train", "trainNdxs"), ("test", "testNdxs")):
        arr = np.atleast_1d(np.asarray(mat_variable(mat, var, path, "the NYUD splits file")))
        arr = arr.ravel()
        if arr.size == 0:
            raise DataError(f"{path}: {var} is empty, so split {split!r} would be empty")
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.mod(arr, 1) == 0):
            raise DataError(f"{path}: {var} must hold integer (1-based) frame indices")
        out[split] = arr.astype(np.int64)
    both = np.intersect1d(out["train"], out["test"])
    if both.size:
        raise DataError(f"{path}: trainNdxs and testNdxs share {both.size} indices "
                        f"(e.g. {int(both[0])}); the splits must be disjoint")
    return out


def read_mapping(path: Path) -> tuple[np.ndarray, list[str]]:
    """(LUT raw label 0..894 -> 0..39 or 255, class names) from classMapping40.mat."""
    mat = load_mat5(path, "NYUD 40-class mapping")
    mapping = np.atleast_1d(np.asarray(mat_variable(mat, "mapClass", path, "the class mapping")))
    mapping = mapping.ravel()
    if mapping.size < 1 or not np.issubdtype(mapping.dtype, np.number):
        raise DataError(f"{path}: mapClass should be a numeric 1x{NYUD_RAW_CLASSES} array")
    if mapping.min() < 0 or mapping.max() > NUM_CLASSES or np.any(np.mod(mapping, 1)):
        raise DataError(f"{path}: mapClass values must be 0..{NUM_CLASSES} (40-class ids)")
    lut = np.full(mapping.size + 1, IGNORE_INDEX, np.uint8)  # raw 0 = unlabelled
    classes = mapping.astype(np.int64)
    lut[1:] = np.where(classes > 0, classes - 1, IGNORE_INDEX)
    names = list(NYUD40_CLASSES)
    if "className" in mat:
        given = [str(n) for n in np.atleast_1d(mat["className"]).ravel()]
        if len(given) == NUM_CLASSES:
            names = given
    return lut, names


def plan(raw: Path, class_mapping: Path | None = None) -> Plan:
    check_layout(raw)
    labeled, splits_path = raw / LABELED, raw / SPLITS_FILE
    if class_mapping is None and (raw / MAPPING_FILE).is_file():
        class_mapping = raw / MAPPING_FILE
    splits = read_splits(splits_path)
    mapping = read_mapping(Path(class_mapping)) if class_mapping is not None else None
    meta: dict = {"task": "depth", "num_classes": 1, "class_names": ["depth"], "palette": [],
                  "ignore_index": 0,
                  "depth": {"unit": "mm", "scale": 1000, "invalid": 0, "png": "uint16"}}
    if mapping is not None:
        info = class_info("nyud")
        info["class_names"] = mapping[1]
        meta["segmentation"] = info
    side = [splits_path] + ([Path(class_mapping)] if class_mapping is not None else [])

    def writer(tmp: Path, params: WriterParams, fp: Fingerprint) -> SplitLists:
        return _write(labeled, splits_path, splits, mapping, tmp, params, fp)

    return Plan("nyud", meta, side_inputs=side, writer=writer)


def depth_to_mm(depth: np.ndarray) -> np.ndarray:
    """Metres (float) -> uint16 millimetres; NaN, inf, <= 0 and > 65.535 m -> 0 (invalid)."""
    mm = np.round(np.nan_to_num(depth.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) * 1000)
    mm[(mm <= 0) | (mm > 65535)] = 0
    return mm.astype(np.uint16)


def _write(labeled: Path, splits_path: Path, splits: dict[str, np.ndarray],
           mapping: tuple[np.ndarray, list[str]] | None, tmp: Path, params: WriterParams,
           fp: Fingerprint) -> SplitLists:
    fp.add_file(labeled)
    lists: SplitLists = {}
    with open_mat73(labeled, LABELED) as f:
        images = mat73_dataset(f, "images", labeled, 4)
        depths = mat73_dataset(f, "depths", labeled, 3)
        labels = mat73_dataset(f, "labels", labeled, 3) if mapping is not None else None
        n, ch, w, h = images.shape
        if ch != 3:
            raise DataError(f"{labeled}: images has {ch} channels (MATLAB shape "
                            f"{h}x{w}x{ch}x{n}); expected HxWx3xN")
        for name, ds in (("depths", depths), ("labels", labels)):
            if ds is not None and tuple(ds.shape) != (n, w, h):
                raise DataError(f"{labeled}: {name} is {tuple(reversed(ds.shape))} (MATLAB) but "
                                f"images is {h}x{w}x3x{n}; image and {name} must match in size")
        for split, idx in splits.items():
            bad = idx[(idx < 1) | (idx > n)]
            if bad.size:
                raise DataError(f"{splits_path}: index {int(bad[0])} in split {split!r} is "
                                f"outside 1..{n}, the frames of {labeled}")

        def read(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            try:
                rgb = read_mat73_frame(images, i)
                depth = read_mat73_frame(depths, i)
                raw = read_mat73_frame(labels, i) if labels is not None else None
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"{labeled}: cannot read frame {i + 1} ({exc}); the file is "
                                "corrupt or truncated, re-download it") from exc
            return rgb, depth, raw

        def save(split: str, ident: str, frame: tuple) -> None:
            rgb, depth, raw = frame
            write_png(tmp / f"images/{split}/{ident}.png", rgb)
            write_png(tmp / f"depth/{split}/{ident}.png", depth_to_mm(depth))
            if raw is not None:
                lut = mapping[0]
                if raw.size and (raw.min() < 0 or raw.max() >= lut.size):
                    raise DataError(f"{labeled}: labels of frame {ident} hold values up to "
                                    f"{int(raw.max())}, outside the {lut.size - 1} classes of "
                                    "the class mapping")
                write_png(tmp / f"labels/{split}/{ident}.png", lut[raw.astype(np.int64)])

        with ThreadPoolExecutor(max_workers=max(1, params.workers)) as pool:
            for split, idx in splits.items():
                futures = []
                for i in tqdm(idx, desc=f"nyud {split}", unit="img", leave=False,
                              mininterval=1.0, disable=None):
                    ident = f"{int(i):04d}"
                    futures.append(pool.submit(save, split, ident, read(int(i) - 1)))
                    if len(futures) > 4 * max(1, params.workers):
                        futures.pop(0).result()
                for fut in futures:
                    fut.result()
                ids = [f"{int(i):04d}" for i in idx]
                lists[split] = [(f"images/{split}/{i}.png", f"depth/{split}/{i}.png") for i in ids]
                if mapping is not None:
                    lists[f"{split}.seg"] = [(f"images/{split}/{i}.png", f"labels/{split}/{i}.png")
                                             for i in ids]
    return lists


# --- synthetic stand-in -----------------------------------------------------------------

SYNTH_SPLITS = {"train": 795, "test": 654}


def write_synthetic(out: Path, num_images: int, seed: int, height: int, width: int,
                    ) -> dict[str, int]:
    counts = split_counts(num_images, SYNTH_SPLITS)
    rng = np.random.default_rng([seed, 0])
    # A class mapping in the official format: every 40-class id gets some raw ids.
    map_class = np.concatenate([np.arange(1, NUM_CLASSES + 1),
                                rng.integers(1, NUM_CLASSES + 1, NYUD_RAW_CLASSES - NUM_CLASSES)])
    map_class = rng.permutation(map_class)
    raw_ids = {c: np.flatnonzero(map_class == c + 1) + 1 for c in range(NUM_CLASSES)}
    styles = class_styles("nyud")
    things = spread_things("nyud", num_images, rng)
    images = np.zeros((height, width, 3, num_images), np.uint8)
    depths = np.zeros((height, width, num_images), np.float32)
    labels = np.zeros((height, width, num_images), np.uint16)
    for k in range(num_images):
        img_rng = np.random.default_rng([seed, 1, k])
        rgb, lab, depth = render_scene("nyud", img_rng, height, width, things[k], styles)
        raw = np.zeros(lab.shape, np.uint16)
        for c in np.unique(lab):
            if c != IGNORE_INDEX:
                raw[lab == c] = img_rng.choice(raw_ids[int(c)])
        images[..., k], depths[..., k], labels[..., k] = rgb, depth, raw
    raw_depths = depths.copy()
    raw_depths[rng.uniform(size=raw_depths.shape) < 0.05] = 0  # Kinect holes
    write_mat73(out / LABELED, {"images": images, "depths": depths, "labels": labels,
                                "rawDepths": raw_depths})
    order = rng.permutation(num_images) + 1
    train = np.sort(order[: counts["train"]]).astype(np.float64).reshape(-1, 1)
    test = np.sort(order[counts["train"]:]).astype(np.float64).reshape(-1, 1)
    save_mat5(out / SPLITS_FILE, {"trainNdxs": train, "testNdxs": test})
    names = np.empty((1, NUM_CLASSES), dtype=object)
    names[0, :] = list(NYUD40_CLASSES)
    save_mat5(out / MAPPING_FILE, {"mapClass": map_class.astype(np.float64).reshape(1, -1),
                                   "className": names})
    return counts
