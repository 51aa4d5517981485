"""PASCAL VOC 2012 + SBD: the augmented training set `train_aug` and `val`.

train_aug = (SBD train + SBD val + VOC train) minus VOC val (10,582 images on
the real data); val = VOC val (1,449). An image with a VOC annotation
(SegmentationClass palette PNG, read as indices, 255 = ignore border) uses it;
the others use SBD's GTcls.Segmentation. Photos come from VOC JPEGImages, or
from SBD img/ when VOC does not have them.
"""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from ..classes import IGNORE_INDEX, VOC_CLASSES, class_info, voc_palette
from ..errors import DataError
from ..imageio import check_label_values, read_bytes
from ..matfile import mat_variable, save_mat5
from ..synthetic import class_styles, render_scene, split_counts
from .base import Plan, Sample
from .common import lut_reader, read_id_list, require_layout

VOC = "VOCdevkit/VOC2012"
SBD = "benchmark_RELEASE/dataset"
LAYOUT = f"""\
  {VOC}/JPEGImages/<id>.jpg                     (VOCtrainval_11-May-2012.tar)
  {VOC}/SegmentationClass/<id>.png              palette PNGs
  {VOC}/ImageSets/Segmentation/train.txt, val.txt
  {SBD}/img/<id>.jpg                     (SBD: benchmark.tgz)
  {SBD}/cls/<id>.mat                     GTcls.Segmentation
  {SBD}/train.txt, val.txt"""
REQUIRED = [f"{VOC}/JPEGImages", f"{VOC}/SegmentationClass",
            f"{VOC}/ImageSets/Segmentation/train.txt", f"{VOC}/ImageSets/Segmentation/val.txt",
            f"{SBD}/img", f"{SBD}/cls", f"{SBD}/train.txt", f"{SBD}/val.txt"]
NUM_CLASSES = len(VOC_CLASSES)


def check_layout(raw: Path) -> None:
    require_layout(raw, "voc", REQUIRED, LAYOUT)


def split_ids(voc_train: list[str], voc_val: list[str], sbd_train: list[str],
              sbd_val: list[str]) -> dict[str, list[str]]:
    """The split arithmetic: train_aug = (SBD train + SBD val + VOC train) - VOC val."""
    val = set(voc_val)
    union = set(sbd_train) | set(sbd_val) | set(voc_train)
    return {"train_aug": sorted(union - val), "val": sorted(val)}


def _valid() -> np.ndarray:
    lut = np.full(256, -1, np.int16)
    lut[:NUM_CLASSES] = np.arange(NUM_CLASSES)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def read_sbd(path: Path) -> tuple[np.ndarray, str]:
    """GTcls.Segmentation of an SBD cls/*.mat file, checked, as uint8."""
    data, sha = read_bytes(path, "SBD annotation")
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # noqa: BLE001 - scipy raises many types on bad input
        raise DataError(f"{path}: corrupt or truncated SBD .mat file ({type(exc).__name__}: "
                        f"{exc}); re-extract benchmark.tgz") from exc
    gt = mat_variable(mat, "GTcls", path, "SBD annotation")
    seg = getattr(gt, "Segmentation", None)
    if seg is None:
        raise DataError(f"{path}: GTcls has no field 'Segmentation'; is this an SBD cls/ file?")
    seg = np.asarray(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise DataError(f"{path}: GTcls.Segmentation should be a 2-D integer array, got "
                        f"{seg.dtype} of shape {seg.shape}")
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise DataError(f"{path}: label values outside the classes: {int(seg.min())}.."
                        f"{int(seg.max())} (expected 0..{NUM_CLASSES - 1})")
    seg = seg.astype(np.uint8)
    check_label_values(seg, _valid() >= 0, path, f"expected 0..{NUM_CLASSES - 1}")
    return seg, sha


def plan(raw: Path, class_mapping: Path | None = None) -> Plan:
    if class_mapping is not None:
        raise DataError(f"{class_mapping}: --class-mapping applies to nyud only")
    check_layout(raw)
    lists = {
        "voc_train": raw / VOC / "ImageSets/Segmentation/train.txt",
        "voc_val": raw / VOC / "ImageSets/Segmentation/val.txt",
        "sbd_train": raw / SBD / "train.txt",
        "sbd_val": raw / SBD / "val.txt",
    }
    ids = {k: read_id_list(p) for k, p in lists.items()}
    splits = split_ids(ids["voc_train"], ids["voc_val"], ids["sbd_train"], ids["sbd_val"])
    voc_annotated = set(ids["voc_train"]) | set(ids["voc_val"])
    sbd_annotated = set(ids["sbd_train"]) | set(ids["sbd_val"])
    read_voc = lut_reader(_valid(), f"expected 0..{NUM_CLASSES - 1} and 255 in a VOC "
                          "SegmentationClass palette PNG", allow_palette=True)
    samples: dict[str, list[Sample]] = {}
    sources = {"voc": 0, "sbd": 0}
    for split, split_ids_ in splits.items():
        items = []
        for i in split_ids_:
            image = raw / VOC / "JPEGImages" / f"{i}.jpg"
            if not image.is_file():
                alt = raw / SBD / "img" / f"{i}.jpg"
                if i in sbd_annotated and alt.is_file():
                    image = alt
                else:
                    raise DataError(f"{image}: image not found (listed in "
                                    f"{_which_list(i, ids, lists)})")
            if i in voc_annotated:
                label, reader = raw / VOC / "SegmentationClass" / f"{i}.png", read_voc
                sources["voc"] += 1
            else:
                label, reader = raw / SBD / "cls" / f"{i}.mat", read_sbd
                sources["sbd"] += 1
            if not label.is_file():
                raise DataError(f"{label}: annotation not found (image {i} is listed in "
                                f"{_which_list(i, ids, lists)})")
            items.append(Sample(split, i, image, label, reader))
        samples[split] = items
    meta = {"task": "segmentation", **class_info("voc"), "label_sources": sources}
    return Plan("voc", meta, samples, side_inputs=list(lists.values()))


def _which_list(i: str, ids: dict[str, list[str]], lists: dict[str, Path]) -> str:
    return ", ".join(str(lists[k]) for k in lists if i in ids[k])


# --- synthetic stand-in -----------------------------------------------------------------

#: Which official lists an image is on, with the share of images in each group
#: (roughly as in the real data: most training images come from SBD only).
GROUPS = {
    ("voc_train",): 0.04, ("voc_train", "sbd_train"): 0.05, ("voc_train", "sbd_val"): 0.03,
    ("voc_val",): 0.05, ("voc_val", "sbd_train"): 0.05, ("voc_val", "sbd_val"): 0.05,
    ("sbd_train",): 0.50, ("sbd_val",): 0.23,
}


def voc_border(labels: np.ndarray, width: int) -> np.ndarray:
    """VOC-style 255 'difficult' border around object outlines."""
    grad = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    if width > 1:
        grad = cv2.dilate(grad.astype(np.uint8), np.ones((width, width), np.uint8)) > 0
    out = labels.copy()
    out[grad] = IGNORE_INDEX
    return out


def sbd_struct(seg: np.ndarray) -> dict:
    """GTcls as in SBD's cls/*.mat: Segmentation, Boundaries (20x1 cell), CategoriesPresent."""
    boundaries = np.empty((NUM_CLASSES - 1, 1), dtype=object)
    for c in range(1, NUM_CLASSES):
        m = (seg == c).astype(np.uint8)
        edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        boundaries[c - 1, 0] = scipy.sparse.csc_matrix(edge & (m > 0))
    present = np.array([c for c in np.unique(seg) if 0 < c < NUM_CLASSES], np.uint8)
    return {"Segmentation": seg.astype(np.uint8), "Boundaries": boundaries,
            "CategoriesPresent": present.reshape(-1, 1)}


def write_synthetic(out: Path, num_images: int, seed: int, height: int, width: int,
                    ) -> dict[str, int]:
    counts = split_counts(num_images, {"|".join(g): w for g, w in GROUPS.items()}, minimum=1)
    styles = class_styles("voc")
    rng = np.random.default_rng([seed, 0])
    groups = [tuple(g.split("|")) for g, n in counts.items() for _ in range(n)]
    order = rng.permutation(len(groups))
    pal = voc_palette().ravel().tolist()
    lists: dict[str, list[str]] = {"voc_train": [], "voc_val": [], "sbd_train": [], "sbd_val": []}
    voc, sbd = out / VOC, out / SBD
    things_pool: list[int] = []
    for k, g in enumerate(order):
        group = groups[g]
        img_rng = np.random.default_rng([seed, 1, k])
        portrait = img_rng.uniform() < 0.3
        jitter = img_rng.uniform(0.85, 1.15)
        h, w = (width, height) if portrait else (height, width)
        h, w = max(16, int(h * jitter)), max(16, int(w * jitter))
        n_things = int(img_rng.integers(1, 4))
        things = []
        for _ in range(n_things):
            if not things_pool:
                things_pool = rng.permutation(np.arange(1, NUM_CLASSES)).tolist()
            things.append(things_pool.pop())
        rgb, labels, _ = render_scene("voc", img_rng, h, w, things, styles)
        image_id = f"{2007 + k % 5}_{k:06d}"
        jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (voc / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpg)
        if any(x.startswith("voc") for x in group):
            png = Image.fromarray(voc_border(labels, max(1, round(h / 100))), mode="P")
            png.putpalette(pal)
            (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
            png.save(voc / "SegmentationClass" / f"{image_id}.png", optimize=False)
        if any(x.startswith("sbd") for x in group):
            (sbd / "img").mkdir(parents=True, exist_ok=True)
            (sbd / "cls").mkdir(parents=True, exist_ok=True)
            (sbd / "img" / f"{image_id}.jpg").write_bytes(jpg)
            save_mat5(sbd / "cls" / f"{image_id}.mat", {"GTcls": sbd_struct(labels)})
        for name in group:
            lists[name].append(image_id)
    seg_sets = voc / "ImageSets" / "Segmentation"
    seg_sets.mkdir(parents=True, exist_ok=True)
    for name, path in (("voc_train", seg_sets / "train.txt"), ("voc_val", seg_sets / "val.txt"),
                       ("sbd_train", sbd / "train.txt"), ("sbd_val", sbd / "val.txt")):
        path.write_text("".join(f"{i}\n" for i in sorted(lists[name])))
    (seg_sets / "trainval.txt").write_text(
        "".join(f"{i}\n" for i in sorted(lists["voc_train"] + lists["voc_val"])))
    splits = split_ids(lists["voc_train"], lists["voc_val"], lists["sbd_train"], lists["sbd_val"])
    return {k: len(v) for k, v in splits.items()}
