# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Single-pass confusion-matrix kernel.

One sweep over the labels does everything: ignore pixels, count valid
(target, prediction) pairs and count pixels with out-of-range labels. Python
objects never enter the loop and it runs without the GIL. Counting goes into a
private buffer that is added to the caller's matrix only when no bad label was
seen, so a failed update leaves an accumulating matrix untouched.
"""
import numpy as np

from libc.stdint cimport int64_t, uint64_t, uint8_t, int16_t, uint16_t, int32_t

ctypedef fused target_t:
    uint8_t
    int16_t
    uint16_t
    int32_t
    int64_t

ctypedef fused pred_t:
    uint8_t
    int16_t
    uint16_t
    int32_t
    int64_t

cdef enum:
    # Four interleaved partial histograms: consecutive pixels usually carry the
    # same label pair, and incrementing one counter in back-to-back iterations
    # makes each store wait for the previous one (store-to-load stall).
    NPARTS = 4
    # Above this many bins per partial histogram the copies stop fitting in L1
    # and the trick costs more than it saves.
    MAX_PARTED_BINS = 4096


cdef inline Py_ssize_t _bin(int64_t t, int64_t p, uint64_t nc, int64_t ignore,
                            bint has_ignore, Py_ssize_t sink_ign,
                            Py_ssize_t sink_bad) noexcept nogil:
    # Unsigned comparison rejects negatives and too-large labels at once.
    if has_ignore and t == ignore:
        return sink_ign
    if <uint64_t>t < nc and <uint64_t>p < nc:
        return <Py_ssize_t>(t * <int64_t>nc + p)
    return sink_bad


def accumulate(const pred_t[::1] pred, const target_t[::1] target,
               Py_ssize_t num_classes, object ignore_index,
               int64_t[::1] out):
    """Add the confusion counts of `pred`/`target` into the flat `out`.

    `out` has num_classes**2 entries (row = target, column = prediction).
    Returns ``(n_bad, n_ignored)``; when n_bad > 0 `out` is left unchanged.
    """
    cdef Py_ssize_t n = target.shape[0]
    if pred.shape[0] != n:
        raise ValueError(f"pred and target sizes differ: {pred.shape[0]} vs {n}")
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    cdef Py_ssize_t nbins = num_classes * num_classes
    if out.shape[0] != nbins:
        raise ValueError(f"out must have {nbins} entries, got {out.shape[0]}")

    cdef bint has_ignore = ignore_index is not None
    cdef int64_t ignore = <int64_t>ignore_index if has_ignore else 0
    cdef Py_ssize_t sink_ign = nbins
    cdef Py_ssize_t sink_bad = nbins + 1
    # Pad each partial histogram to a whole number of 64-byte cache lines.
    cdef Py_ssize_t stride = ((nbins + 2 + 7) // 8) * 8
    cdef Py_ssize_t nparts = NPARTS if stride <= MAX_PARTED_BINS else 1
    cdef int64_t[::1] buf = np.zeros(nparts * stride, dtype=np.int64)
    cdef int64_t *h0 = &buf[0]
    cdef int64_t *h1 = h0 + stride * (nparts > 1)
    cdef int64_t *h2 = h0 + 2 * stride * (nparts > 1)
    cdef int64_t *h3 = h0 + 3 * stride * (nparts > 1)
    cdef uint64_t nc = <uint64_t>num_classes
    cdef Py_ssize_t i, j, n4 = n - n % 4
    cdef int64_t n_bad, n_ign

    with nogil:
        i = 0
        while i < n4:
            h0[_bin(target[i], pred[i], nc, ignore, has_ignore, sink_ign, sink_bad)] += 1
            h1[_bin(target[i + 1], pred[i + 1], nc, ignore, has_ignore, sink_ign, sink_bad)] += 1
            h2[_bin(target[i + 2], pred[i + 2], nc, ignore, has_ignore, sink_ign, sink_bad)] += 1
            h3[_bin(target[i + 3], pred[i + 3], nc, ignore, has_ignore, sink_ign, sink_bad)] += 1
            i += 4
        while i < n:
            h0[_bin(target[i], pred[i], nc, ignore, has_ignore, sink_ign, sink_bad)] += 1
            i += 1
        if nparts > 1:
            for j in range(stride):
                h0[j] += h1[j] + h2[j] + h3[j]
        n_bad = h0[sink_bad]
        n_ign = h0[sink_ign]
        if n_bad == 0:
            for j in range(nbins):
                out[j] += h0[j]
    return n_bad, n_ign
