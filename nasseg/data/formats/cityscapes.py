"""CityScapes (fine annotations): leftImg8bit + gtFine labelIds -> 19 train ids.

The id -> train id table is the official one from `cityscapesscripts`; ids that
are not evaluated (unlabeled, ego vehicle, parking, ...) become 255.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..classes import IGNORE_INDEX, class_info, cityscapes_tables
from ..errors import DataError
from ..imageio import write_png
from ..synthetic import class_styles, render_scene, split_counts, spread_things
from .base import Plan, Sample
from .common import lut_reader, require_layout

LAYOUT = """\
  leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png   (leftImg8bit_trainvaltest.zip)
  leftImg8bit/val/<city>/...
  leftImg8bit/test/<city>/...                                    (optional)
  gtFine/train/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png    (gtFine_trainvaltest.zip)
  gtFine/val/<city>/...
  gtFine/test/<city>/...                                         (needed if leftImg8bit/test exists)"""
REQUIRED = ["leftImg8bit/train", "leftImg8bit/val", "gtFine/train", "gtFine/val"]
SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


def check_layout(raw: Path) -> None:
    require_layout(raw, "cityscapes", REQUIRED, LAYOUT)


def plan(raw: Path, class_mapping: Path | None = None) -> Plan:
    if class_mapping is not None:
        raise DataError(f"{class_mapping}: --class-mapping applies to nyud only")
    check_layout(raw)
    lut, _, _ = cityscapes_tables()
    reader = lut_reader(lut, "expected CityScapes label ids 0..33; is this a "
                        f"*{LABEL_SUFFIX} file?", allow_palette=False)
    samples: dict[str, list[Sample]] = {}
    for split in SPLITS:
        img_dir = raw / "leftImg8bit" / split
        if split == "test" and not img_dir.exists():
            continue
        if split == "test":
            require_layout(raw, "cityscapes", ["gtFine/test"], LAYOUT)
        images = sorted(img_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not images:
            loose = sorted(img_dir.glob("*.png"))[:1]
            extra = (f"; found {loose[0]} directly in it, but CityScapes keeps images in one "
                     "sub-folder per city" if loose else "")
            raise DataError(f"{img_dir}: split {split!r} is empty (no "
                            f"<city>/*{IMAGE_SUFFIX} images){extra}\nExpected layout:\n{LAYOUT}")
        items = []
        for img in images:
            stem = img.name[: -len(IMAGE_SUFFIX)]
            label = raw / "gtFine" / split / img.parent.name / f"{stem}{LABEL_SUFFIX}"
            if not label.is_file():
                raise DataError(f"{label}: not found: the label of image {img} (every "
                                f"leftImg8bit image needs its gtFine{LABEL_SUFFIX[7:]})")
            items.append(Sample(split, stem, img, label, reader))
        samples[split] = items
    return Plan("cityscapes", {"task": "segmentation", **class_info("cityscapes")}, samples)


# --- synthetic stand-in -----------------------------------------------------------------

SYNTH_SPLITS = {"train": 0.75, "val": 0.25}
CITIES = {"train": ("aachen", "bremen", "zurich"), "val": ("frankfurt", "lindau", "munster")}


def write_synthetic(out: Path, num_images: int, seed: int, height: int, width: int,
                    ) -> dict[str, int]:
    from cityscapesscripts.helpers.labels import labels as cs_labels

    lut, _, palette = cityscapes_tables()
    train_to_id = {}
    for label_id in range(len(lut)):
        if 0 <= lut[label_id] < IGNORE_INDEX:
            train_to_id.setdefault(int(lut[label_id]), label_id)
    void_ids = [i for i in range(len(lut)) if lut[i] == IGNORE_INDEX]
    to_id = np.zeros(256, np.uint8)
    for t, i in train_to_id.items():
        to_id[t] = i
    colour_of_id = np.zeros((256, 3), np.uint8)
    for lab in cs_labels:
        if 0 <= lab.id < 256:
            colour_of_id[lab.id] = lab.color

    counts = split_counts(num_images, SYNTH_SPLITS)
    styles = class_styles("cityscapes")
    rng = np.random.default_rng([seed, 0])
    things = spread_things("cityscapes", num_images, rng)
    k = 0
    for split, n in counts.items():
        for j in range(n):
            img_rng = np.random.default_rng([seed, 1, k])
            rgb, train_ids, _ = render_scene("cityscapes", img_rng, height, width, things[k], styles)
            ids = to_id[train_ids]
            ids[train_ids == IGNORE_INDEX] = img_rng.choice(void_ids)
            city = CITIES[split][j % len(CITIES[split])]
            stem = f"{city}_{j:06d}_000019"
            write_png(out / "leftImg8bit" / split / city / f"{stem}{IMAGE_SUFFIX}", rgb)
            gt = out / "gtFine" / split / city
            write_png(gt / f"{stem}{LABEL_SUFFIX}", ids)
            write_png(gt / f"{stem}_gtFine_color.png", colour_of_id[ids])
            k += 1
    return counts
