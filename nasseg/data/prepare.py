"""Convert a dataset from its official on-disk layout to the prepared format.

Prepared format (the same for every dataset)::

    <out>/meta.json            task, classes, palette, ignore index, split sizes, fingerprint
    <out>/<split>.lst          one line per sample: <image>\\t<label or depth>, relative to <out>
    <out>/images/<split>/<id>.<ext>
    <out>/labels/<split>/<id>.png   single-channel uint8 class indices, 255 = ignore
    <out>/depth/<split>/<id>.png    (NYUD) uint16 millimetres, 0 = invalid

File names keep the dataset's own image id. Everything is written into a
temporary folder beside `<out>` that replaces `<out>` only when the whole
conversion succeeded, so an interrupted run leaves nothing half-written and
re-running is always safe.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from tqdm import tqdm

from ..config import Config
from ..io import atomic_directory, atomic_write_json
from .classes import OFFICIAL_SPLIT_SIZES
from .errors import DataError
from .formats import get_format
from .formats.base import Fingerprint, Plan, Sample, SplitLists
from .imageio import check_same_size, place_file, read_bytes, verify_image, write_png

log = logging.getLogger(__name__)

FORMAT = "nasseg-prepared/1"
#: Written by `synthesize` at the root of a synthetic raw dataset.
SYNTHETIC_MARKER = "SYNTHETIC.json"
#: Written by `prepare` into its output, so that a re-run may replace that folder
#: even when a workflow tool removed meta.json first.
PREPARED_MARKER = ".nasseg-prepared"


class PrepareParams(Config):
    """Section `prepare` of params.yaml."""

    #: threads that decode, check and write samples (0: in the calling thread)
    workers: int = Field(default=2, ge=0)
    #: for real (non-synthetic) data, compare split sizes with the official ones
    check_split_sizes: Literal["error", "warn", "ignore"] = "error"
    #: how input photos reach <out>/images: byte copies, or hard links (saves disk space)
    images: Literal["copy", "hardlink"] = "copy"


def read_synthetic_marker(raw: Path) -> dict[str, Any] | None:
    marker = raw / SYNTHETIC_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{marker}: unreadable synthetic-data marker ({exc}); "
                        "re-run the synthesize stage") from exc


def _check_out(raw: Path, out: Path) -> None:
    r, o = raw.resolve(), out.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise DataError(f"{out}: the output folder must not be, contain or lie inside the raw "
                        f"folder {raw}")
    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder")
        if any(out.iterdir()) and not ((out / "meta.json").is_file()
                                       or (out / PREPARED_MARKER).is_file()):
            raise DataError(f"{out}: exists, is not empty and holds no meta.json, so it is "
                            "not an earlier prepare output; refusing to replace it (choose "
                            "another --out or remove the folder)")


def _convert_sample(sample: Sample, tmp: Path, params: PrepareParams,
                    ) -> tuple[str, str, list[tuple[Path, str]]]:
    data, img_sha = read_bytes(sample.image, "image")
    hw = verify_image(data, sample.image)
    label, lbl_sha = sample.reader(sample.label)
    check_same_size(hw, label.shape, sample.image, sample.label)
    img_rel = f"images/{sample.split}/{sample.id}{sample.image.suffix.lower()}"
    lbl_rel = f"labels/{sample.split}/{sample.id}.png"
    place_file(sample.image, data, tmp / img_rel, params.images)
    write_png(tmp / lbl_rel, label)
    return img_rel, lbl_rel, [(sample.image, img_sha), (sample.label, lbl_sha)]


def _run(fn: Callable[[Any], Any], items: list[Any], workers: int, desc: str) -> Iterable[Any]:
    bar = dict(total=len(items), desc=desc, unit="img", leave=False, mininterval=1.0,
               disable=None)
    if workers <= 1:
        return tqdm(map(fn, items), **bar)
    pool = ThreadPoolExecutor(max_workers=workers)

    def gen() -> Iterable[Any]:
        try:
            yield from tqdm(pool.map(fn, items), **bar)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return gen()


def write_file_samples(plan: Plan, tmp: Path, params: PrepareParams, fp: Fingerprint,
                       ) -> SplitLists:
    """Convert every sample of a file-based plan; return the list lines per split."""
    lists: SplitLists = {}
    for split, samples in plan.samples.items():
        lines = []
        fn = lambda s: _convert_sample(s, tmp, params)  # noqa: E731
        for img_rel, lbl_rel, inputs in _run(fn, samples, params.workers, f"{plan.dataset} {split}"):
            lines.append((img_rel, lbl_rel))
            for path, sha in inputs:
                fp.add(path, sha)
        lists[split] = lines
    return lists


def check_split_sizes(dataset: str, raw: Path, sizes: dict[str, int], mode: str) -> None:
    expected = OFFICIAL_SPLIT_SIZES[dataset]
    wrong = {k: (sizes[k], v) for k, v in expected.items() if k in sizes and sizes[k] != v}
    if not wrong or mode == "ignore":
        return
    detail = ", ".join(f"{k}: {got} (official {want})" for k, (got, want) in wrong.items())
    msg = (f"{raw}: split sizes differ from the official {dataset} dataset: {detail}. Is the "
           "download complete and the layout right? To accept a deliberate subset, set "
           "prepare.check_split_sizes to 'warn' (or --set check_split_sizes=warn).")
    if mode == "error":
        raise DataError(msg)
    log.warning(msg)


def prepare_dataset(dataset: str, raw: Path, out: Path, params: PrepareParams | None = None,
                    class_mapping: Path | None = None) -> dict[str, Any]:
    """Convert `raw` (official layout of `dataset`) into `out`; return meta.json's content."""
    params = params or PrepareParams()
    raw, out = Path(raw), Path(out)
    fmt = get_format(dataset)
    _check_out(raw, out)
    marker = read_synthetic_marker(raw) if raw.is_dir() else None
    plan = fmt.plan(raw, class_mapping=class_mapping)
    fp = Fingerprint(raw)
    for path in plan.side_inputs:
        fp.add_file(path)
    with atomic_directory(out) as tmp:
        if plan.writer is not None:
            lists = plan.writer(tmp, params, fp)
        else:
            lists = write_file_samples(plan, tmp, params, fp)
        sizes = {split: len(lines) for split, lines in lists.items() if "." not in split}
        for split, lines in lists.items():
            if not lines:
                raise DataError(f"{raw}: split {split!r} is empty")
            text = "".join(f"{a}\t{b}\n" for a, b in lines)
            (tmp / f"{split}.lst").write_text(text)
        if marker is None:
            check_split_sizes(dataset, raw, sizes, params.check_split_sizes)
        meta = {"format": FORMAT, "dataset": dataset, **plan.meta,
                "splits": sizes,
                "lists": {split: f"{split}.lst" for split in sizes},
                "synthetic": marker is not None,
                "fingerprint": fp.digest(),
                "num_input_files": len(fp.entries)}
        if marker is not None:
            meta["synthetic_params"] = marker
        extra = meta.get("segmentation")
        if isinstance(extra, dict):  # NYUD's optional 40-class labels
            extra["splits"] = {s: len(lists[f"{s}.seg"]) for s in sizes if f"{s}.seg" in lists}
            extra["lists"] = {s: f"{s}.seg.lst" for s in extra["splits"]}
        atomic_write_json(tmp / "meta.json", meta)
        (tmp / PREPARED_MARKER).write_text(FORMAT + "\n")
    log.info("prepared %s into %s: %s", dataset, out,
             ", ".join(f"{k} {v}" for k, v in sizes.items()))
    return meta
