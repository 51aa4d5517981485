"""MATLAB .mat files: v7.3 (HDF5) for NYUD, v5 for SBD and the NYUD side files.

MATLAB stores arrays column-major. A v7.3 file is an HDF5 file (after a 512-byte
user block holding a text header) whose datasets hold MATLAB's column-major
bytes, so h5py sees every array with its axes reversed: MATLAB's 480x640x3xN
`images` appears as (N, 3, 640, 480). :func:`read_mat73_frame` undoes that and
:func:`write_mat73` writes arrays exactly the way MATLAB would.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

_MATLAB_CLASS = {
    np.dtype(np.uint8): "uint8", np.dtype(np.uint16): "uint16", np.dtype(np.int16): "int16",
    np.dtype(np.uint32): "uint32", np.dtype(np.int32): "int32",
    np.dtype(np.float32): "single", np.dtype(np.float64): "double", np.dtype(bool): "logical",
}
#: The fixed creation date keeps synthetic files byte-identical for a seed.
_HEADER_DATE = "Thu Jan  1 00:00:00 2015"


def mat73_header() -> bytes:
    """The 128-byte text header MATLAB writes at the start of a v7.3 file."""
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {_HEADER_DATE} "
            "HDF5 schema 1.00 .").encode("ascii")
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat73(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` (each in MATLAB's own axis order, e.g. HxWx3xN) as a v7.3 .mat file."""
    import h5py

    path = Path(path)
    with h5py.File(path, "w", userblock_size=512, libver="earliest", track_order=False) as f:
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            matlab_class = _MATLAB_CLASS.get(arr.dtype)
            if matlab_class is None:
                raise TypeError(f"write_mat73: no MATLAB class for dtype {arr.dtype} ({name})")
            # Column-major bytes of the MATLAB array == C-order bytes of its transpose.
            data = np.ascontiguousarray(arr.T)
            if arr.dtype == bool:
                data = data.astype(np.uint8)
            ds = f.create_dataset(name, data=data, track_times=False)
            ds.attrs["MATLAB_class"] = np.bytes_(matlab_class)
    with open(path, "r+b") as fh:
        fh.write(mat73_header())


def check_mat73(path: Path, what: str) -> None:
    """Raise a DataError naming `path` unless it is a MATLAB v7.3 (HDF5) file."""
    import h5py

    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    if h5py.is_hdf5(path):
        return
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB 5.0"):
        raise DataError(f"{path}: this is a MATLAB v5 .mat file, but {what} is distributed "
                        "as MATLAB v7.3 (HDF5); re-download the official file")
    raise DataError(f"{path}: not a MATLAB v7.3 (HDF5) file (corrupt or truncated download?); "
                    f"re-download {what}")


@contextmanager
def open_mat73(path: Path, what: str) -> Iterator[Any]:
    """Open a v7.3 .mat file read-only, with errors naming the file."""
    import h5py

    check_mat73(path, what)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: cannot open {what} as HDF5 ({exc}); re-download it") from exc
    try:
        yield f
    finally:
        f.close()


def mat73_dataset(f: Any, name: str, path: Path, ndim: int) -> Any:
    """The h5py dataset `name` of an open v7.3 file, checked for its rank."""
    if name not in f:
        raise DataError(f"{path}: no variable {name!r} (found: {', '.join(sorted(f.keys()))}); "
                        "is this nyu_depth_v2_labeled.mat?")
    ds = f[name]
    if len(ds.shape) != ndim:
        raise DataError(f"{path}: variable {name!r} has shape {ds.shape} as stored (MATLAB "
                        f"{tuple(reversed(ds.shape))}); expected {ndim} dimensions")
    return ds


def read_mat73_frame(ds: Any, index: int) -> np.ndarray:
    """Frame `index` (0-based, MATLAB's last axis) of a v7.3 array, in MATLAB axis order.

    `images` (stored N x 3 x W x H) gives H x W x 3; `depths`/`labels`
    (stored N x W x H) give H x W.
    """
    frame = np.asarray(ds[index])
    return np.ascontiguousarray(frame.T)


def load_mat5(path: Path, what: str) -> dict[str, Any]:
    """Load a MATLAB v5 file (SBD annotations, splits.mat, classMapping40.mat)."""
    import scipy.io

    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError as exc:  # v7.3 given where v5 is expected
        raise DataError(f"{path}: {what} should be a MATLAB v5 .mat file ({exc})") from exc
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError on corrupt files
        raise DataError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc}); the file "
                        "is corrupt or truncated, re-download or re-extract it") from exc


def mat_variable(data: dict[str, Any], name: str, path: Path, what: str) -> Any:
    if name not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "nothing"
        raise DataError(f"{path}: {what} has no variable {name!r} (found: {found})")
    return data[name]


def save_mat5(path: str | os.PathLike, variables: dict[str, Any], compress: bool = True) -> None:
    """scipy.io.savemat with a fixed header date, so equal content gives equal bytes."""
    import io

    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=compress)
    data = bytearray(buf.getvalue())
    text = f"MATLAB 5.0 MAT-file, Platform: GLNXA64, Created on: {_HEADER_DATE}".encode("ascii")
    data[:116] = text.ljust(116, b" ")
    Path(path).write_bytes(bytes(data))
