# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The recurrent loops of :class:`nasseg.search.policy_kernel.PolicyKernel`, in C.

What: the LSTM recurrence of the controller, forward (:func:`forward_steps`) and
backward (:func:`backward_steps`), over buffers that PolicyKernel owns. Each step
is one matrix-vector product and one fused element-wise loop, instead of eight or
nine torch operators.

Why: in the original's update (one Adam step per buffered architecture, 100 a
step) each architecture needs the whole recurrence forward and back: 92 (WACV) or
46 (CVPR) LSTM cell steps of 100 units each way. At this size a torch operator's
dispatch (~1.5 us) costs more than its arithmetic, and the loops spent most of
their time dispatching. Everything outside the recurrence (gate derivatives, the
heads, weight gradients) stays in torch, done for all steps at once.

How the speed is chosen on each CPU: the matrix-vector product and the element-wise
loops are plain C compiled once per instruction set (GCC's ``target_clones``:
AVX-512, AVX2+FMA, and the x86-64 baseline), and the loader picks the best one the
CPU has when the module is imported; nothing is measured on one machine and fixed.
Built with ``CFLAGS="-DNASSEG_NO_CLONES -march=haswell"`` there is one version only,
for the ``-march`` given: how ``benchmarks/controller_update.py`` measures as on an
AVX2-only CPU on a machine that has AVX-512.
No BLAS library is called: OpenBLAS's threads stall beside torch's OpenMP pool,
and at this size one core is the right number.

The maths is PolicyKernel's (tests/test_strategies.py checks the gradients against
autograd); only float32 rounding differs from torch's (sigmoid and tanh are
computed from ``expf``).
"""

cdef extern from *:
    """
    #include <math.h>
    #if defined(NASSEG_NO_CLONES)
    /* one instruction set, the compiler's -march (to measure as on another CPU kind) */
    #define NASSEG_CLONES
    #elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define NASSEG_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
    #else
    #define NASSEG_CLONES
    #endif

    /* y[m] = M x, M column-major m x n (leading dimension m): y = sum_k M[:, k] x[k]. */
    NASSEG_CLONES
    static void nasseg_gemv_cm(const float *M, const float *x, float *y, int m, int n) {
        for (int j = 0; j < m; ++j) y[j] = 0.0f;
        for (int k = 0; k < n; ++k) {
            const float xk = x[k];
            const float *col = M + (long)k * m;
            for (int j = 0; j < m; ++j) y[j] += col[j] * xk;
        }
    }

    static inline float nasseg_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
    static inline float nasseg_tanh(float v) { return 2.0f / (1.0f + expf(-2.0f * v)) - 1.0f; }

    /* One LSTM cell step. a[4h]: pre-activations in, activated gates i, f, g, o out. */
    NASSEG_CLONES
    static void nasseg_cell_forward(float *a, const float *c_prev, float *c, float *tc,
                                    float *h_out, float *feed, int h) {
        for (int j = 0; j < 2 * h; ++j) a[j] = nasseg_sigmoid(a[j]);
        for (int j = 2 * h; j < 3 * h; ++j) a[j] = nasseg_tanh(a[j]);
        for (int j = 3 * h; j < 4 * h; ++j) a[j] = nasseg_sigmoid(a[j]);
        for (int j = 0; j < h; ++j) {
            const float cj = a[h + j] * c_prev[j] + a[j] * a[2 * h + j];
            const float tj = nasseg_tanh(cj);
            const float hj = a[3 * h + j] * tj;
            c[j] = cj; tc[j] = tj; h_out[j] = hj; feed[j] = hj;
        }
    }

    /* One LSTM cell step back: dh (in), dc_next (in) -> dz[4h], dc_prev[h]. */
    NASSEG_CLONES
    static void nasseg_cell_backward(const float *dh, const float *dc_next, const float *ot,
                                     const float *gci, const float *tco, const float *f,
                                     float *dz, float *dc_prev, int h) {
        for (int j = 0; j < h; ++j) {
            const float dc = dc_next[j] + dh[j] * ot[j];
            dz[j] = gci[j] * dc;
            dz[h + j] = gci[h + j] * dc;
            dz[2 * h + j] = gci[2 * h + j] * dc;
            dz[3 * h + j] = tco[j] * dh[j];
            dc_prev[j] = dc * f[j];
        }
    }

    /* Which of the versions above runs on this CPU. */
    static const char *nasseg_instruction_set(void) {
    #if defined(NASSEG_NO_CLONES)
    #  if defined(__AVX512F__)
        return "avx512f (one version, -march)";
    #  elif defined(__AVX2__)
        return "avx2 (one version, -march)";
    #  else
        return "x86-64 baseline or other (one version, -march)";
    #  endif
    #elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f")) return "avx512f (clone picked at load)";
        if (__builtin_cpu_is("haswell") || (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
            return "avx2+fma (clone picked at load)";
        return "x86-64 baseline (clone picked at load)";
    #else
        return "the compiler's default";
    #endif
    }
    """
    const char *nasseg_instruction_set()
    void nasseg_gemv_cm(const float *M, const float *x, float *y, int m, int n) nogil
    void nasseg_cell_forward(float *a, const float *c_prev, float *c, float *tc,
                             float *h_out, float *feed, int h) nogil
    void nasseg_cell_backward(const float *dh, const float *dc_next, const float *ot,
                              const float *gci, const float *tco, const float *f,
                              float *dz, float *dc_prev, int h) nogil


def instruction_set() -> str:
    """The instruction set of the loops that run on this CPU."""
    return nasseg_instruction_set().decode()


def forward_steps(float[:, :, ::1] wt, float[:, :, ::1] xh, float[:, :, ::1] act,
                  float[:, :, ::1] c, float[:, :, ::1] tc, int h, int steps) -> None:
    """The recurrence forward, all layers, steps 0 .. steps-1.

    ``wt[l]`` is [width, 4h] (``[W_ih | W_hh | b]`` transposed, read as a
    column-major 4h x width matrix); ``xh[l]`` [steps+1, width], row t
    ``[input_t, h_t-1, 1, 0...]``; ``act[l]`` [steps, 4h] receives the activated
    gates; ``c[l]`` [steps+1, h] (row t+1 = c_t); ``tc[l]`` [steps, h] = tanh(c_t).
    The top layer's output feeds layer 0's next input, as PolicyKernel lays out.
    """
    cdef int layers = wt.shape[0], width = wt.shape[1], t, l, top = layers - 1
    cdef float *feed
    with nogil:
        for t in range(steps):
            for l in range(layers):
                nasseg_gemv_cm(&wt[l, 0, 0], &xh[l, t, 0], &act[l, t, 0], 4 * h, width)
                if l == top:
                    feed = &xh[0, t + 1, 0]
                else:
                    feed = &xh[l + 1, t, 0]
                nasseg_cell_forward(&act[l, t, 0], &c[l, t, 0], &c[l, t + 1, 0], &tc[l, t, 0],
                                    &xh[l, t + 1, h], feed, h)


def backward_steps(float[:, :, ::1] w, float[:, :, ::1] act, float[:, :, ::1] ot,
                   float[:, :, :, ::1] gci, float[:, :, ::1] tco, float[:, ::1] dout,
                   float[:, :, ::1] dz, float[:, :, ::1] dxh, float[:, :, ::1] dcp,
                   float[::1] dh, int h, int steps) -> None:
    """The recurrence backward, all layers, steps steps-1 .. 0.

    ``w[l]`` is [4h, width] (``[W_ih | W_hh | 0]``, read as a column-major
    width x 4h matrix); ``dout`` [steps, h] the loss's gradient at the top
    outputs; ``dz[l]`` [steps, 4h], ``dxh[l]`` [steps+1, width] and ``dcp[l]``
    [steps+1, h] receive the gradients (their last rows must be zero).
    """
    cdef int layers = w.shape[0], width = w.shape[2], t, l, j, top = layers - 1
    with nogil:
        for t in range(steps - 1, -1, -1):
            for l in range(top, -1, -1):
                if l == top:
                    for j in range(h):
                        dh[j] = dxh[l, t + 1, h + j] + dout[t, j] + dxh[0, t + 1, j]
                else:
                    for j in range(h):
                        dh[j] = dxh[l, t + 1, h + j] + dxh[l + 1, t, j]
                nasseg_cell_backward(&dh[0], &dcp[l, t + 1, 0], &ot[l, t, 0], &gci[l, t, 0, 0],
                                     &tco[l, t, 0], &act[l, t, h], &dz[l, t, 0], &dcp[l, t, 0], h)
                nasseg_gemv_cm(&w[l, 0, 0], &dz[l, t, 0], &dxh[l, t, 0], width, 4 * h)
