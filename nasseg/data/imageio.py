"""Reading and writing images and label maps, with errors that name the file.

`prepare` verifies every input with Pillow (which refuses truncated JPEG and
PNG files instead of silently filling the missing rows) and writes labels as
single-channel uint8 PNGs with OpenCV. The loaders read the prepared files
with OpenCV, which is faster.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def read_bytes(path: Path, what: str = "file") -> tuple[bytes, str]:
    """The bytes of `path` and their SHA-256, or a DataError naming the file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise DataError(f"{path}: expected a {what}, found a folder") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from exc
    return data, hashlib.sha256(data).hexdigest()


def _open_fully(data: bytes, path: Path, what: str) -> Image.Image:
    if not data:
        raise DataError(f"{path}: {what} is empty (0 bytes); re-download or re-extract it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: corrupt or truncated {what} (not a recognised image "
                        "format); re-download or re-extract it") from exc
    except _PIL_ERRORS + (Image.DecompressionBombWarning,) as exc:
        raise DataError(f"{path}: corrupt or truncated {what} ({exc}); "
                        "re-download or re-extract it") from exc
    return img


def verify_image(data: bytes, path: Path) -> tuple[int, int]:
    """Decode an input photo completely; return its (height, width)."""
    img = _open_fully(data, path, "image")
    if img.mode not in ("RGB", "L", "RGBA", "P", "CMYK", "YCbCr"):
        raise DataError(f"{path}: unexpected image mode {img.mode!r}; expected an RGB photo")
    return img.height, img.width


def decode_index_png(data: bytes, path: Path, *, allow_palette: bool = True) -> np.ndarray:
    """Decode a label PNG holding class indices (8-bit grey or palette) as uint8 HxW.

    Palette PNGs (PASCAL VOC) are read as their indices, not their colours.
    """
    img = _open_fully(data, path, "label image")
    if img.mode == "P" and allow_palette or img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("RGB", "RGBA"):
        raise DataError(f"{path}: label is a colour image (mode {img.mode}); expected a "
                        "single-channel PNG of class indices"
                        + (" (palette or 8-bit grey)" if allow_palette else " (8-bit grey)"))
    raise DataError(f"{path}: label has mode {img.mode!r}; expected a single-channel "
                    "8-bit PNG of class indices")


def check_label_values(label: np.ndarray, valid: np.ndarray, path: Path, hint: str) -> None:
    """Raise a DataError naming `path` if `label` holds values outside `valid` (bool[256])."""
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in present if not valid[v]]
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise DataError(f"{path}: label values outside the classes: {shown} ({hint})")


def check_same_size(image_hw: tuple[int, int], label_hw: tuple[int, ...],
                    image: Path, label: Path) -> None:
    if tuple(image_hw) != tuple(label_hw[:2]):
        (ih, iw), (lh, lw) = image_hw, label_hw[:2]
        raise DataError(f"{label}: label is {lw}x{lh} (WxH) but its image {image} is "
                        f"{iw}x{ih}; image and label must have the same size")


def encode_png(array: np.ndarray, path: Path) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise DataError(f"{path}: could not encode PNG")
    return buf.tobytes()


def write_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 (HxW or HxWx3 RGB) or uint16 HxW array as PNG (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    path.write_bytes(encode_png(np.ascontiguousarray(array), path))


def place_file(src: Path, data: bytes, dst: Path, mode: str) -> None:
    """Put the input file `src` (already read as `data`) at `dst`: copy or hard link."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "hardlink":
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system: fall back to a copy
    dst.write_bytes(data)


# --- reading prepared data (loaders) -------------------------------------------------

def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as an HxWx3 RGB uint8 array (OpenCV)."""
    arr = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if arr is None:
        raise DataError(f"{path}: cannot read image (missing, corrupt or truncated); "
                        "re-run the prepare stage")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def load_single_channel(path: str | os.PathLike, dtype: type) -> np.ndarray:
    """A single-channel PNG (uint8 label or uint16 depth) as an HxW array."""
    arr = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"{path}: cannot read label/depth image (missing, corrupt or "
                        "truncated); re-run the prepare stage")
    if arr.ndim != 2 or arr.dtype != dtype:
        raise DataError(f"{path}: expected a single-channel {np.dtype(dtype).name} PNG, got "
                        f"shape {arr.shape} of {arr.dtype}")
    return arr
