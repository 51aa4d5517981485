"""The contract between the dataset format modules and their callers.

A format module (one per dataset, under `nasseg.data.formats`) knows one
official on-disk layout. Two callers use it: `nasseg.data.prepare` converts the
raw layout into the prepared format, and `nasseg.data.synthesize` writes a
synthetic stand-in in that same layout. What passes between them lives here:

* :class:`DatasetFormat`, the members every format module provides;
* :class:`Plan` and :class:`Sample`, what a format found in a raw folder;
* :class:`Fingerprint`, the hash of the input files, which a plan's own writer
  (NYUD) fills while it reads;
* :class:`WriterParams`, the settings such a writer may read.

It lives in the formats package because it is what the format modules
implement, and it imports neither `prepare` nor any format module, so both
sides import it without forming an import cycle.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Reads one label file: (uint8 HxW class indices, 255 = ignore; SHA-256 of the file's bytes).
#: Raises DataError naming the file when it is missing, corrupt or holds values outside the
#: classes.
LabelReader = Callable[[Path], tuple[np.ndarray, str]]

#: Per split (or NYUD's "<split>.seg"), the lines of its list file: (image, target) paths
#: relative to the output folder.
SplitLists = dict[str, list[tuple[str, str]]]


class WriterParams(Protocol):
    """The conversion settings a :attr:`Plan.writer` may read (`PrepareParams` has them)."""

    @property
    def workers(self) -> int:
        """Threads that decode and write samples (0: in the calling thread)."""
        ...


@dataclass
class Fingerprint:
    """SHA-256 over (relative path, content hash) of every input file."""

    root: Path
    entries: dict[str, str] = field(default_factory=dict)

    def add(self, path: Path, sha: str) -> None:
        """Record `path` (relative to `root`, or its name if outside) with its hash."""
        try:
            rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            rel = path.name
        self.entries[rel] = sha

    def add_file(self, path: Path) -> None:
        """Hash the content of `path` and record it."""
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        self.add(path, h.hexdigest())

    def digest(self) -> str:
        """The digest, "sha256:<hex>", over every recorded (path, hash) in path order."""
        h = hashlib.sha256()
        for rel in sorted(self.entries):
            h.update(f"{rel}\t{self.entries[rel]}\n".encode())
        return "sha256:" + h.hexdigest()


#: Writes every split into the (temporary) output folder; returns the list lines per split.
PlanWriter = Callable[[Path, WriterParams, Fingerprint], SplitLists]


@dataclass
class Sample:
    """One input pair of a file-based dataset."""

    split: str
    id: str
    image: Path
    label: Path
    reader: LabelReader


@dataclass
class Plan:
    """What a dataset converter found in the raw folder."""

    dataset: str
    meta: dict[str, Any]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    #: list/side files that also define the result (their hashes join the fingerprint)
    side_inputs: list[Path] = field(default_factory=list)
    #: converters that do not read one file per sample (NYUD) write the split themselves
    writer: PlanWriter | None = None


@runtime_checkable
class DatasetFormat(Protocol):
    """What every format module provides (the modules themselves satisfy this protocol).

    Every input problem raises :class:`~nasseg.data.errors.DataError` whose message
    starts with the offending file (or folder) and says how to fix it.
    """

    #: The official layout, one path per line relative to the raw folder, as shown in
    #: errors about a wrong layout.
    LAYOUT: str
    #: Paths relative to the raw folder that :meth:`check_layout` requires to exist.
    REQUIRED: Sequence[str]

    def check_layout(self, raw: Path) -> None:
        """Check that `raw` holds the official layout, without reading any file.

        Raises DataError naming `raw` when it does not exist or is a file, else naming
        the first path of :attr:`REQUIRED` that is missing; the message lists every
        missing path, shows :attr:`LAYOUT`, and says where the layout sits when it is
        found one or two folders deeper.
        """
        ...

    def plan(self, raw: Path, class_mapping: Path | None = None) -> Plan:
        """Check the layout, read the list and side files, and locate every sample.

        Returns a :class:`Plan` whose samples name each image and label file (their
        readers decode and check them later), or, for data that is not one file per
        sample, a plan whose `writer` converts the splits itself and raises DataError
        naming the file for what it finds while reading. Raises DataError
        naming the file for a wrong layout (as :meth:`check_layout`), an unreadable or
        empty list file, an empty split, a listed image or label that is missing, or a
        `class_mapping` given to a dataset that takes none.
        """
        ...

    def write_synthetic(self, out: Path, num_images: int, seed: int, height: int,
                        width: int) -> dict[str, int]:
        """Write `num_images` synthetic images at `height` x `width` into the empty
        folder `out`, in the official layout and file formats, so that :meth:`plan`
        reads them like the real download.

        Deterministic for a seed. Returns the number of images per split as
        `prepare` will find them. Raises ValueError when `num_images` is too small to
        fill every split.
        """
        ...


__all__ = ["DatasetFormat", "Fingerprint", "LabelReader", "Plan", "PlanWriter", "Sample",
           "SplitLists", "WriterParams"]
