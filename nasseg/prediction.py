"""Predictions of a trained model on image files: masks, overlays, depth maps.

What: an image file is read (Pillow, decoded completely, errors naming the
file), normalised as for evaluation (:func:`nasseg.data.eval_transform`), passed
through :func:`nasseg.evaluation.predict` at full resolution (optionally with
flip / multi-scale) and turned into

* segmentation: the class map, written as a palette PNG (``<name>_mask.png``:
  its pixels are the class indices, shown in the dataset's colours) and an
  overlay of the image and the coloured mask (``<name>_overlay.png``);
* depth: a colour-mapped depth PNG (``<name>_depth.png``, the colour range is each
  image's own minimum to maximum) and a 16-bit PNG in millimetres
  (``<name>_depth_mm.png``, as the prepared NYUD depth; 0 = invalid).

The palette comes from the model card; a card without one (an authors'
checkpoint) takes the dataset's from :mod:`nasseg.data.classes`, and failing
that the PASCAL VOC colour map. :func:`authors_card` builds the card of an
authors' checkpoint (their files hold weights only).

Where we differ from the original: the authors' notebooks resized nothing,
ran the network, upsampled and coloured the arg-max in the notebook itself;
here one function does it for the stage, the notebook and any other caller,
with the same numbers as the evaluate stage.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .checkpoint import ModelCard
from .data.errors import DataError
from .evaluation import predict
from .io import atomic_write_bytes

__all__ = ["IMAGE_SUFFIXES", "Prediction", "authors_card", "find_images", "read_image",
           "image_tensor", "predict_image", "palette_for", "colorize", "overlay",
           "colorize_depth", "mask_png", "rgb_png", "depth_mm_png", "predict_files", "class_histogram"]

log = logging.getLogger(__name__)

#: What a folder is searched for (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Prediction:
    """One image's prediction: ``labels`` (HxW class indices) or ``depth`` (HxW metres)."""
    image: np.ndarray                 # HxWx3 uint8 RGB, as read
    labels: np.ndarray | None = None  # HxW uint8 (or int64 beyond 256 classes)
    depth: np.ndarray | None = None   # HxW float32 metres


def authors_card(genotype: str, num_classes: int, *, meta: Mapping[str, Any] | None = None,
                 dataset: str | None = None) -> ModelCard:
    """The card of an authors' checkpoint: genotype (a published name such as ``wacv/arch0``
    or a genotype JSON file), class count, and the class names and palette of the data.

    One output channel means depth (their NYUD depth model), more mean segmentation.
    ``meta`` (a prepared dataset's meta.json) or ``dataset`` (a name in
    :data:`nasseg.data.DATASETS`) supplies the class names and palette when their
    count matches ``num_classes``.
    """
    from .data.classes import class_info
    from .genotypes import load_genotype

    if num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {num_classes}")
    task = "depth" if num_classes == 1 else "segmentation"
    info: Mapping[str, Any] = {}
    name = dataset or ""
    if meta is not None:
        name = name or str(meta.get("dataset", ""))
        info = meta if meta.get("task") == task else meta.get(task) or {}
    elif dataset and task == "segmentation":
        info = class_info(dataset)
    names = tuple(info.get("class_names", ()))
    palette = tuple(tuple(int(v) for v in c) for c in info.get("palette", ()))
    if task == "depth":
        names, palette = ("depth",), ()
    elif len(names) != num_classes:
        names, palette = (), ()
    return ModelCard(genotype=load_genotype(genotype), num_classes=num_classes, task=task,
                     dataset=name, class_names=names, palette=palette,
                     ignore_index=int(info.get("ignore_index", 255)))


def find_images(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """``(image file, output stem)`` for files and folders (walked for .png/.jpg/.jpeg).

    The output stem is the file name without suffix, or for a file found in a
    folder its path relative to that folder. Raises FileNotFoundError for a
    missing path and ValueError when nothing is found or two inputs would write
    the same outputs.
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ValueError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
            found += [(p, p.relative_to(path).with_suffix("")) for p in files]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            raise FileNotFoundError(f"{path}: image or folder not found")
    seen: dict[Path, Path] = {}
    for image, stem in found:
        if stem in seen:
            raise ValueError(f"{image}: its outputs ({stem}_*.png) would overwrite those of {seen[stem]}; "
                             "predict them into separate --out folders")
        seen[stem] = image
    return found


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as HxWx3 RGB uint8, decoded completely; DataError naming a bad file."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image not found") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read this image ({exc}); is it a complete PNG or JPEG?") from exc


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A 1x3xHxW float tensor, normalised as the evaluate stage feeds the model."""
    from torchvision import tv_tensors

    from .data.transforms import eval_transform

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    return eval_transform()(img).as_subclass(torch.Tensor).unsqueeze(0)


def predict_image(model: nn.Module, card: ModelCard, image: np.ndarray, *, flip: bool = False,
                  scales: Sequence[float] = (1.0,), device: str | torch.device = "cpu") -> Prediction:
    """Predict one RGB image at its full resolution with ``model`` (in eval mode)."""
    x = image_tensor(image).to(device)
    out = predict(model, x, tuple(image.shape[:2]), flip=flip, scales=scales)[0].cpu()
    if card.task == "depth":
        return Prediction(image, depth=out[0].numpy().astype(np.float32))
    labels = out.argmax(0).numpy()
    return Prediction(image, labels=labels.astype(np.uint8) if card.num_classes <= 256 else labels)


def palette_for(card: ModelCard, dataset: str | None = None) -> np.ndarray:
    """The (num_classes, 3) uint8 colours of ``card``'s classes.

    The card's palette; else the palette of ``dataset`` (or of the card's
    dataset) from :mod:`nasseg.data.classes` when it has as many classes; else the
    PASCAL VOC colour map.
    """
    from .data.classes import DATASETS, class_info, voc_palette

    n = card.num_classes
    if len(card.palette) >= n:
        return np.asarray(card.palette[:n], dtype=np.uint8)
    name = dataset or card.dataset
    if name in DATASETS:
        pal = class_info(name)["palette"]
        if len(pal) == n:
            return np.asarray(pal, dtype=np.uint8)
        log.warning("%s has %d classes, the model %d: colouring with the VOC colour map", name, len(pal), n)
    return voc_palette(max(n, 1))[:n]


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 colours of a class map (classes beyond the palette: black)."""
    pal = np.zeros((max(int(labels.max(initial=0)) + 1, len(palette)), 3), dtype=np.uint8)
    pal[:len(palette)] = palette
    return pal[labels]


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` blended with ``colours`` (weight ``alpha`` on the colours), uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)


def colorize_depth(depth: np.ndarray, cmap: str = "plasma_r") -> np.ndarray:
    """HxWx3 uint8 colours of a depth map in metres, over the image's own [min, max]
    of the positive values (near: bright); non-positive or non-finite depth: black."""
    from matplotlib import colormaps

    valid = np.isfinite(depth) & (depth > 0)
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    if valid.any():
        lo, hi = float(depth[valid].min()), float(depth[valid].max())
        scaled = (depth[valid] - lo) / (hi - lo) if hi > lo else np.zeros(int(valid.sum()))
        out[valid] = (colormaps[cmap](scaled)[:, :3] * 255).round().astype(np.uint8)
    return out


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def mask_png(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """A palette PNG of a class map: the pixels are the class indices, shown in ``palette``.

    More than 256 classes cannot be a palette PNG: the coloured map is written instead.
    """
    if int(labels.max(initial=0)) > 255 or len(palette) > 256:
        return rgb_png(colorize(labels, palette))
    img = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))   # mode L
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[:len(palette)] = palette
    img.putpalette(flat.ravel().tolist())   # L -> P, the indices kept
    return _png(img)


def rgb_png(image: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 RGB array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
    return _png(Image.fromarray(np.ascontiguousarray(image)))


def depth_mm_png(depth: np.ndarray) -> bytes:
    """A 16-bit PNG of depth in millimetres (prepared NYUD's format; invalid or out of range: 0)."""
    from .data.formats.nyud import depth_to_mm

    return _png(Image.fromarray(depth_to_mm(depth)))


def predict_files(model: nn.Module, card: ModelCard, inputs: Sequence[str | os.PathLike],
                  out_dir: str | os.PathLike, *, palette: np.ndarray | None = None,
                  dataset: str | None = None, flip: bool = False, scales: Sequence[float] = (1.0,),
                  alpha: float = 0.5, device: str | torch.device = "cpu",
                  progress: bool = True) -> list[dict[str, Any]]:
    """Predict every image of ``inputs`` (files and folders) and write its PNGs into ``out_dir``.

    Returns one record per image: the input, the files written and, for
    segmentation, the number of pixels per predicted class. Each file is
    written atomically; all inputs are found (and checked to exist) first.
    """
    from tqdm.auto import tqdm

    images = find_images(inputs)
    out_dir = Path(out_dir)
    if card.task == "segmentation" and palette is None:
        palette = palette_for(card, dataset)
    model = model.to(device).eval()
    records = []
    for path, stem in tqdm(images, desc="predict", unit="img", disable=not progress):
        pred = predict_image(model, card, read_image(path), flip=flip, scales=scales, device=device)
        base = out_dir / stem
        record: dict[str, Any] = {"image": str(path)}
        files: dict[str, bytes] = {}
        if pred.labels is not None:
            assert palette is not None
            files["mask"] = mask_png(pred.labels, palette)
            files["overlay"] = rgb_png(overlay(pred.image, colorize(pred.labels, palette), alpha))
            counts = np.bincount(pred.labels.ravel(), minlength=card.num_classes)
            record["class_pixels"] = {int(c): int(n) for c, n in enumerate(counts) if n}
        else:
            assert pred.depth is not None
            files["depth"] = rgb_png(colorize_depth(pred.depth))
            files["depth_mm"] = depth_mm_png(pred.depth)
            record["depth_range_m"] = [float(np.nanmin(pred.depth)), float(np.nanmax(pred.depth))]
        for kind, data in files.items():
            target = base.parent / f"{base.name}_{kind}.png"
            atomic_write_bytes(target, data)
            record[kind] = str(target)
        records.append(record)
    return records


def class_histogram(records: Iterable[Mapping[str, Any]], class_names: Sequence[str] = ()) -> dict[str, int]:
    """Pixels per predicted class over ``records`` of :func:`predict_files`, keyed by name."""
    total: dict[int, int] = {}
    for rec in records:
        for c, n in rec.get("class_pixels", {}).items():
            total[int(c)] = total.get(int(c), 0) + int(n)
    return {(class_names[c] if c < len(class_names) else str(c)): n for c, n in sorted(total.items())}
