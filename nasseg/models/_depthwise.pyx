# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Depthwise 2-D convolution on NHWC float32 maps, in C: forward, input gradient and
weight gradient (:mod:`nasseg.models.depthwise` wraps them as an autograd function).

What: a direct loop nest. Each output pixel's channel vector is the sum, over the
kernel taps that land inside the map, of an input channel vector times the tap's
weight vector; channels are the innermost (vectorised) loop. Taps that fall in the
zero padding are skipped, not multiplied: a 5x5 kernel at dilation 6 on an 8x8 map
reads at most 3x3 of its taps.

Why: oneDNN's dilated depthwise kernels are slow, and so are its kernels on small maps
(a 2-core AMD EPYC with AVX2 only, forward and backward of a 5x5 kernel at dilation 6,
as timed by the search's kernel chooser: 16x48x64x64, 261 ms in oneDNN, 29 ms on
sub-grids, 25 ms here; 16x48x8x8, 5.4 ms, 17 ms and 0.6 ms). Which implementation is
fastest for a given shape is measured on the machine at hand
(:mod:`nasseg.search.kernels`), not assumed: oneDNN wins elsewhere (undilated 3x3 on
16x48x64x64: 12.5 against 14.9 ms).

Threads: the rows of the output (or of the input gradient) are split among up to
``threads`` OpenMP threads (torch's own pool: see ``nasseg_dw_parallel``), fewer when
the work is small. The weight gradient adds the threads' partial sums in a fixed
order: with the same number of threads, the same bits. Compiled once per instruction
set (GCC ``target_clones``, as ``nasseg/search/_lstm.pyx``; ``-DNASSEG_NO_CLONES``
builds one version for ``-march``).
"""

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #if defined(NASSEG_NO_CLONES)
    #define NASSEG_DW_CLONES
    #elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define NASSEG_DW_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
    #else
    #define NASSEG_DW_CLONES
    #endif
    #define NASSEG_DW_MAX_THREADS 64
    /* below this many multiply-adds per thread, fewer threads (waking one costs microseconds) */
    #define NASSEG_DW_MIN_WORK 200000L

    typedef struct {
        const float *a, *b;   /* forward: x, w; input grad: gy, w; weight grad: gy, x */
        float *out;
        int N, H, W, C, KH, KW, OH, OW, s, p, d;
        long r0, r1;          /* rows of [N * rows] this thread does */
    } nasseg_dw_job;

    /* The channels of one output pixel in blocks of B (16, then 8, then 1) whose running
       sums stay in registers (GCC unrolls the constant-length loops): for each block, the
       sum over the taps (i, j) that pass VALID of SRC(i, j)[c] * WGT(i, j)[c]. */
    #define NASSEG_DW_BLOCKS(C, OUT, VALID_I, VALID_J, SRC, WGT)                          \
        {                                                                                  \
            int c0 = 0;                                                                    \
            NASSEG_DW_BLOCK(16, C, OUT, VALID_I, VALID_J, SRC, WGT)                        \
            NASSEG_DW_BLOCK(8, C, OUT, VALID_I, VALID_J, SRC, WGT)                         \
            NASSEG_DW_BLOCK(1, C, OUT, VALID_I, VALID_J, SRC, WGT)                         \
        }
    #define NASSEG_DW_BLOCK(B, C, OUT, VALID_I, VALID_J, SRC, WGT)                         \
        for (; c0 + B <= C; c0 += B) {                                                     \
            float acc[B];                                                                  \
            for (int c = 0; c < B; ++c) acc[c] = 0.0f;                                     \
            for (int i = 0; i < KH; ++i) {                                                 \
                if (!(VALID_I)) continue;                                                  \
                for (int j = 0; j < KW; ++j) {                                             \
                    if (!(VALID_J)) continue;                                              \
                    const float *sv = (SRC) + c0, *wv = (WGT) + c0;                        \
                    for (int c = 0; c < B; ++c) acc[c] += sv[c] * wv[c];                   \
                }                                                                          \
            }                                                                              \
            for (int c = 0; c < B; ++c) (OUT)[c0 + c] = acc[c];                            \
        }

    /* y[n, oh, ow, :] = sum over taps inside the map of x[n, ih, iw, :] * w[i, j, :] */
    NASSEG_DW_CLONES
    static void nasseg_dw_forward_rows(const nasseg_dw_job *J) {
        const int H = J->H, W = J->W, C = J->C, KH = J->KH, KW = J->KW, OH = J->OH, OW = J->OW;
        const int s = J->s, p = J->p, d = J->d;
        const float *w = J->b;
        for (long r = J->r0; r < J->r1; ++r) {
            const int n = (int)(r / OH), i0 = (int)(r % OH) * s - p;
            const float *xn = J->a + (long)n * H * W * C;
            float *yrow = J->out + r * (long)OW * C;
            for (int ow = 0; ow < OW; ++ow) {
                const int j0 = ow * s - p;
                NASSEG_DW_BLOCKS(C, yrow + (long)ow * C,
                                 i0 + i * d >= 0 && i0 + i * d < H,
                                 j0 + j * d >= 0 && j0 + j * d < W,
                                 xn + ((long)(i0 + i * d) * W + (j0 + j * d)) * C,
                                 w + (long)(i * KW + j) * C)
            }
        }
    }

    /* gx[n, ih, iw, :] = sum over (i, j, oh, ow) with oh*s - p + i*d == ih (and the
       same for w) of gy[n, oh, ow, :] * w[i, j, :] (a gather: no two threads write
       the same pixel). For stride 1 the caller runs the forward loops instead, with the
       kernel flipped: the same sums without the divisibility tests. */
    NASSEG_DW_CLONES
    static void nasseg_dw_input_grad_rows(const nasseg_dw_job *J) {
        const int H = J->H, W = J->W, C = J->C, KH = J->KH, KW = J->KW, OH = J->OH, OW = J->OW;
        const int s = J->s, p = J->p, d = J->d;
        const float *w = J->b;
        for (long r = J->r0; r < J->r1; ++r) {
            const int n = (int)(r / H), t0 = (int)(r % H) + p;
            const float *gyn = J->a + (long)n * OH * OW * C;
            float *gxrow = J->out + r * (long)W * C;
            for (int iw = 0; iw < W; ++iw) {
                const int u0 = iw + p;
                NASSEG_DW_BLOCKS(C, gxrow + (long)iw * C,
                                 t0 - i * d >= 0 && (t0 - i * d) % s == 0 && (t0 - i * d) / s < OH,
                                 u0 - j * d >= 0 && (u0 - j * d) % s == 0 && (u0 - j * d) / s < OW,
                                 gyn + ((long)((t0 - i * d) / s) * OW + (u0 - j * d) / s) * C,
                                 w + (long)(i * KW + j) * C)
            }
        }
    }

    /* out[i, j, :] = sum over the job's output rows of gy[n, oh, ow, :] * x[n, ih, iw, :]
       (out is this thread's own [KH, KW, C] partial sum) */
    NASSEG_DW_CLONES
    static void nasseg_dw_weight_grad_rows(const nasseg_dw_job *J) {
        const int H = J->H, W = J->W, C = J->C, KH = J->KH, KW = J->KW, OH = J->OH, OW = J->OW;
        const int s = J->s, p = J->p, d = J->d;
        float *restrict gw = J->out;
        memset(gw, 0, sizeof(float) * (size_t)KH * KW * C);
        for (long r = J->r0; r < J->r1; ++r) {
            const int n = (int)(r / OH), oh = (int)(r % OH);
            const float *xn = J->b + (long)n * H * W * C;
            const float *gyrow = J->a + r * (long)OW * C;
            for (int i = 0; i < KH; ++i) {
                const int ih = oh * s - p + i * d;
                if (ih < 0 || ih >= H) continue;
                const float *xrow = xn + (long)ih * W * C;
                for (int j = 0; j < KW; ++j) {
                    float *restrict acc = gw + (long)(i * KW + j) * C;
                    for (int ow = 0; ow < OW; ++ow) {
                        const int iw = ow * s - p + j * d;
                        if (iw < 0 || iw >= W) continue;
                        const float *restrict gv = gyrow + (long)ow * C;
                        const float *restrict xv = xrow + (long)iw * C;
                        for (int c = 0; c < C; ++c) acc[c] += gv[c] * xv[c];
                    }
                }
            }
        }
    }

    typedef void (*nasseg_dw_fn)(const nasseg_dw_job *);
    typedef struct { nasseg_dw_fn fn; nasseg_dw_job job; } nasseg_dw_task;

    /* Split rows [0, rows) over up to `threads` threads (fewer for small work) and run
       fn on each part; `outs` gives each part's output (NULL: the shared one). Returns
       the number of parts. The threads are OpenMP's: the same libgomp as torch's (one
       library of that name per process), so these loops and torch's operators share
       one pool of threads instead of competing for the cores. */
    static int nasseg_dw_parallel(nasseg_dw_fn fn, nasseg_dw_job base, long rows, long work_per_row,
                                  int threads, float **outs) {
        nasseg_dw_task tasks[NASSEG_DW_MAX_THREADS];
        long by_work = (rows * work_per_row) / NASSEG_DW_MIN_WORK;
        if (threads > NASSEG_DW_MAX_THREADS) threads = NASSEG_DW_MAX_THREADS;
        if (threads > rows) threads = (int)rows;
        if (threads > by_work) threads = by_work < 1 ? 1 : (int)by_work;
        if (threads < 1) threads = 1;
        for (int t = 0; t < threads; ++t) {
            tasks[t].fn = fn;
            tasks[t].job = base;
            tasks[t].job.r0 = rows * t / threads;
            tasks[t].job.r1 = rows * (t + 1) / threads;
            if (outs) tasks[t].job.out = outs[t];
        }
        if (threads == 1) {
            fn(&tasks[0].job);
        } else {
            #pragma omp parallel for num_threads(threads) schedule(static, 1)
            for (int t = 0; t < threads; ++t) tasks[t].fn(&tasks[t].job);
        }
        return threads;
    }

    static int nasseg_dw_out_size(int size, int k, int s, int p, int d) {
        return (size + 2 * p - d * (k - 1) - 1) / s + 1;
    }

    static int nasseg_dw_forward(const float *x, const float *w, float *y, int N, int H, int W, int C,
                                 int KH, int KW, int s, int p, int d, int threads) {
        nasseg_dw_job J = {x, w, y, N, H, W, C, KH, KW, nasseg_dw_out_size(H, KH, s, p, d),
                           nasseg_dw_out_size(W, KW, s, p, d), s, p, d, 0, 0};
        return nasseg_dw_parallel(nasseg_dw_forward_rows, J, (long)N * J.OH, (long)J.OW * C * KH * KW,
                                  threads, NULL);
    }

    static int nasseg_dw_input_grad(const float *gy, const float *w, float *gx, int N, int H, int W, int C,
                                    int KH, int KW, int s, int p, int d, int threads) {
        nasseg_dw_job J = {gy, w, gx, N, H, W, C, KH, KW, nasseg_dw_out_size(H, KH, s, p, d),
                           nasseg_dw_out_size(W, KW, s, p, d), s, p, d, 0, 0};
        return nasseg_dw_parallel(nasseg_dw_input_grad_rows, J, (long)N * H, (long)W * C * KH * KW,
                                  threads, NULL);
    }

    /* gw [KH, KW, C]; scratch: room for threads * KH * KW * C floats */
    static int nasseg_dw_weight_grad(const float *gy, const float *x, float *gw, float *scratch,
                                     int N, int H, int W, int C, int KH, int KW, int s, int p, int d,
                                     int threads) {
        nasseg_dw_job J = {gy, x, gw, N, H, W, C, KH, KW, nasseg_dw_out_size(H, KH, s, p, d),
                           nasseg_dw_out_size(W, KW, s, p, d), s, p, d, 0, 0};
        float *outs[NASSEG_DW_MAX_THREADS];
        long size = (long)KH * KW * C;
        if (threads > NASSEG_DW_MAX_THREADS) threads = NASSEG_DW_MAX_THREADS;
        if (threads < 1) threads = 1;
        outs[0] = gw;
        for (int t = 1; t < threads; ++t) outs[t] = scratch + (long)(t - 1) * size;
        int parts = nasseg_dw_parallel(nasseg_dw_weight_grad_rows, J, (long)N * J.OH,
                                       (long)J.OW * C * KH * KW, threads, outs);
        for (int t = 1; t < parts; ++t)
            for (long k = 0; k < size; ++k) gw[k] += outs[t][k];
        return parts;
    }
    """
    int nasseg_dw_forward(const float *x, const float *w, float *y, int N, int H, int W, int C,
                          int KH, int KW, int s, int p, int d, int threads) nogil
    int nasseg_dw_input_grad(const float *gy, const float *w, float *gx, int N, int H, int W, int C,
                             int KH, int KW, int s, int p, int d, int threads) nogil
    int nasseg_dw_weight_grad(const float *gy, const float *x, float *gw, float *scratch,
                              int N, int H, int W, int C, int KH, int KW, int s, int p, int d,
                              int threads) nogil


def forward(size_t x, size_t w, size_t y, int n, int h, int width, int c, int kh, int kw,
            int stride, int padding, int dilation, int threads) -> int:
    """``y`` [n, oh, ow, c] from ``x`` [n, h, width, c] and ``w`` [kh, kw, c] (addresses of
    contiguous float32 buffers); returns the number of threads used."""
    cdef int used
    with nogil:
        used = nasseg_dw_forward(<const float *>x, <const float *>w, <float *>y, n, h, width, c, kh, kw,
                                 stride, padding, dilation, threads)
    return used


def input_grad(size_t gy, size_t w, size_t gx, int n, int h, int width, int c, int kh, int kw,
               int stride, int padding, int dilation, int threads) -> int:
    """``gx`` [n, h, width, c], the input's gradient, from ``gy`` [n, oh, ow, c] and ``w``."""
    cdef int used
    with nogil:
        used = nasseg_dw_input_grad(<const float *>gy, <const float *>w, <float *>gx, n, h, width, c,
                                    kh, kw, stride, padding, dilation, threads)
    return used


def weight_grad(size_t gy, size_t x, size_t gw, size_t scratch, int n, int h, int width, int c, int kh,
                int kw, int stride, int padding, int dilation, int threads) -> int:
    """``gw`` [kh, kw, c], the weight's gradient, from ``gy`` and ``x``; ``scratch`` holds
    (threads - 1) * kh * kw * c floats for the other threads' partial sums."""
    cdef int used
    with nogil:
        used = nasseg_dw_weight_grad(<const float *>gy, <const float *>x, <float *>gw, <float *>scratch,
                                     n, h, width, c, kh, kw, stride, padding, dilation, threads)
    return used
