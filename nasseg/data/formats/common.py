"""Helpers shared by the dataset format modules."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..imageio import check_label_values, decode_index_png, read_bytes


def require_layout(raw: Path, dataset: str, required: Iterable[str], layout: str) -> None:
    """Raise a DataError naming the first missing path, with the expected layout."""
    raw = Path(raw)
    how = (f"\nExpected layout of {raw} (the official {dataset} download):\n{layout}\n"
           f"Place or link your download at {raw}, or set data.source.{dataset}: synthetic "
           f"and run the synthesize_{dataset} stage.")
    if not raw.exists():
        raise DataError(f"{raw}: raw data folder not found.{how}")
    if not raw.is_dir():
        raise DataError(f"{raw}: expected a folder, found a file.{how}")
    missing = [p for p in required if not (raw / p).exists()]
    if not missing:
        return
    hint = _find_elsewhere(raw, missing[0])
    listed = "\n".join(f"  {raw / p}" for p in missing)
    raise DataError(f"{raw / missing[0]}: not found, so {raw} is not in the {dataset} layout. "
                    f"Missing:\n{listed}{hint}{how}")


def _find_elsewhere(raw: Path, rel: str) -> str:
    """If `rel` sits one or two folders deeper, say where (a common linking mistake)."""
    first = Path(rel).parts[0]
    for pattern in (f"*/{first}", f"*/*/{first}"):
        for found in sorted(raw.glob(pattern))[:1]:
            parent = found.parent
            return (f"\nFound {found}: link or move {parent} itself to {raw} "
                    "(the folder that directly contains it).")
    return ""


def read_id_list(path: Path) -> list[str]:
    """Image ids, one per line (first whitespace-separated token); empty lines skipped."""
    data, _ = read_bytes(path, "list file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file of image ids ({exc})") from exc
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: list file is empty (no image ids); re-extract the dataset")
    seen: set[str] = set()
    unique = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            unique.append(i)
    return unique


def lut_reader(lut: np.ndarray, hint: str, *, allow_palette: bool):
    """A label reader for index PNGs: decode, check values against `lut` (-1 = invalid), map."""
    valid = lut >= 0
    table = np.where(valid, lut, 0).astype(np.uint8)

    def read(path: Path) -> tuple[np.ndarray, str]:
        data, sha = read_bytes(path, "label image")
        label = decode_index_png(data, path, allow_palette=allow_palette)
        check_label_values(label, valid, path, hint)
        return table[label], sha

    return read
