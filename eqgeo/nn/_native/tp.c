/* eqgeo native CPU kernel for the "uvu" and "uuu" paths of a tensor product.
 *
 * Plain C (no Python or torch headers) so that the system compiler builds it in a second or
 * two at first use; loaded by eqgeo/nn/_native/__init__.py with ctypes and called from the
 * custom ops eqgeo::tensor_product / eqgeo::tensor_product_backward with raw data pointers.
 *
 * Features are in e3nn's layout: an irrep block of multiplicity U and dimension d is stored
 * u-major, x[u * d + i]. For one sample and one path (normalisation folded into C):
 *
 *   uvu: out[u,k] = sum_v w[u,v] sum_i x1[u,i] A_v[i,k],  A_v[i,k] = sum_j C[i,j,k] x2[v,j]
 *   uuu: out[u,k] = w[u]         sum_i x1[u,i] A_u[i,k],  A_u[i,k] = sum_j C[i,j,k] x2[u,j]
 *
 * i.e. the second input is contracted with the Clebsch-Gordan block first (for spherical
 * harmonics, V = 1: once per sample and path). For "uvu" the sample's x1 blocks are
 * transposed once into a channel-major scratch (t[i * U + u], in L1 cache), so the channel
 * loops are contiguous and vectorise; each result is transposed back while it is written. The
 * backward recomputes A and gives, with s = w[u,v] (1 without weights),
 *
 *   H[i,u]    = sum_k A[i,k] go[u,k]
 *   gx1[u,i] += s H[i,u]
 *   gw[u,v]   = sum_i x1[u,i] H[i,u]
 *   gA[i,k]   = sum_u s x1[u,i] go[u,k]    then  gx2[v,j] += sum_ik C[i,j,k] gA[i,k]
 *
 * Everything is local to a sample, so samples are shared between threads (a persistent pool of
 * sleeping pthreads, chunks handed out by an atomic counter) without write conflicts; shared weights accumulate their
 * gradient in one buffer per thread, summed at the end. "uuu" paths (rare, and small) use
 * plain loops in the feature layout.
 *
 * The file includes itself twice, once per floating-point type (float, double).
 */
#ifndef EQGEO_TP_REAL

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* Fields of one path in the int64 table `meta` (NF entries per path). */
enum { F_MODE, F_OFF1, F_OFF2, F_OFFO, F_U, F_V, F_D1, F_D2, F_DO, F_WOFF, F_COFF, F_ASSIGN, NF };
enum { MODE_UVU = 0, MODE_UUU = 1 };
/* Header: batch, number of paths (the first H_NUVU of them "uvu"), row lengths, weight row
 * length (0: shared weights), number of weights, number of output ranges to zero (pairs
 * (offset, length) in `zeros`), number of blocks of x1 (triples (offset, mul, dim) in
 * `blocks1`), and the largest mul, mul * dim_out and dim_in1 * dim_out over the paths. */
enum { H_B, H_NPATHS, H_NUVU, H_DIM1, H_DIM2, H_DIMO, H_LDW, H_NUMEL, H_NZERO, H_NB1, H_MAXU, H_MAXUDO, H_MAXA, NH };

int eqgeo_tp_abi_version(void) { return 3; }
int eqgeo_tp_header_size(void) { return NH; }
int eqgeo_tp_path_fields(void) { return NF; }

/* Ask the kernel for transparent huge pages on the 2 MiB-aligned interior of a fresh buffer
 * that is about to be written (fewer, cheaper page faults on first touch). A hint only. */
int eqgeo_advise_hugepages(void *p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)1 << 21;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
    if (e > a) return madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
    return 0;
}

typedef void (*range_fn)(void *args, int64_t start, int64_t end, int tid);

/* A persistent pool of worker threads that sleep on a condition variable between jobs (they
 * never spin), created on first need and grown to the largest thread count asked for.
 *
 * A job is open to at most nthreads - 1 workers. A worker that wakes joins it under the pool's
 * mutex (taking a thread id 1..nthreads-1 for its scratch buffers) and then takes chunks from an
 * atomic counter like the caller does. When the caller has no chunk left it closes the job and
 * waits only for the workers that joined: a worker that was not scheduled in time (a busy
 * machine) never delays the caller, it finds the job closed and goes back to sleep. So with a
 * competing process the caller does at worst all the work itself, as with one thread. One job
 * runs at a time; a call that finds the pool busy (another Python thread) runs on its caller. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_mutex_t job;  /* held by the caller for a whole job */
    int nworkers;         /* threads created */
    unsigned long gen;    /* job generation */
    int open, joined, max_join, active;
    range_fn fn;
    void *args;
    int64_t total, chunk, next;
} pool_t;

static pool_t P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
                   PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0, 0};

static void run_chunks(range_fn fn, void *args, int64_t total, int64_t chunk, int tid) {
    for (;;) {
        int64_t s = __atomic_fetch_add(&P.next, chunk, __ATOMIC_RELAXED);
        if (s >= total) break;
        fn(args, s, s + chunk < total ? s + chunk : total, tid);
    }
}

static void *pool_thread(void *unused) {
    (void)unused;
    unsigned long seen = 0;
    pthread_mutex_lock(&P.mu);
    for (;;) {
        while (!P.open || P.gen == seen) pthread_cond_wait(&P.wake, &P.mu);
        seen = P.gen;
        if (P.joined >= P.max_join) continue;
        int tid = ++P.joined;
        P.active++;
        range_fn fn = P.fn;
        void *args = P.args;
        int64_t total = P.total, chunk = P.chunk;
        pthread_mutex_unlock(&P.mu);
        run_chunks(fn, args, total, chunk, tid);
        pthread_mutex_lock(&P.mu);
        if (--P.active == 0) pthread_cond_signal(&P.done);
    }
    return NULL;
}

/* In a forked child the workers do not exist and the locks may be held: start afresh. */
static void pool_after_fork_child(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER, j = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER, d = PTHREAD_COND_INITIALIZER;
    P.mu = m;
    P.job = j;
    P.wake = c;
    P.done = d;
    P.nworkers = 0;
    P.open = P.joined = P.max_join = P.active = 0;
}

static void pool_grow(int want) {  /* called with P.mu held */
    static int atfork = 0;
    if (!atfork) {
        pthread_atfork(NULL, NULL, pool_after_fork_child);
        atfork = 1;
    }
    while (P.nworkers < want) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, pool_thread, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        P.nworkers++;
    }
}

/* Number of threads the pool has (for tests). */
int eqgeo_pool_threads(void) { return P.nworkers; }

/* Run fn over [0, total) on up to nthreads threads (the caller's thread is one of them). */
static void parallel_for(int64_t total, int nthreads, range_fn fn, void *args) {
    if (total <= 0) return;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    if ((int64_t)nthreads > (total + 31) / 32) nthreads = (int)((total + 31) / 32);
    if (nthreads == 1 || pthread_mutex_trylock(&P.job) != 0) {
        fn(args, 0, total, 0);
        return;
    }
    int64_t chunk = total / ((int64_t)nthreads * 16);
    chunk = chunk < 8 ? 8 : (chunk > 256 ? 256 : chunk);
    pthread_mutex_lock(&P.mu);
    pool_grow(nthreads - 1);
    P.fn = fn;
    P.args = args;
    P.total = total;
    P.chunk = chunk;
    __atomic_store_n(&P.next, 0, __ATOMIC_RELAXED);
    P.joined = P.active = 0;
    P.max_join = nthreads - 1 < P.nworkers ? nthreads - 1 : P.nworkers;
    P.gen++;
    P.open = 1;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    run_chunks(fn, args, total, chunk, 0);
    pthread_mutex_lock(&P.mu);
    P.open = 0;
    while (P.active > 0) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&P.job);
}

static int clamp_threads(int nthreads) { return nthreads < 1 ? 1 : (nthreads > 64 ? 64 : nthreads); }

#define EQGEO_TP_REAL float
#define EQGEO_TP_NAME(x) x##_f32
#include __FILE__
#undef EQGEO_TP_REAL
#undef EQGEO_TP_NAME

#define EQGEO_TP_REAL double
#define EQGEO_TP_NAME(x) x##_f64
#include __FILE__
#undef EQGEO_TP_REAL
#undef EQGEO_TP_NAME

#else /* ------------------------------------------------------------ one floating-point type */

typedef EQGEO_TP_REAL EQGEO_TP_NAME(real);
#define real EQGEO_TP_NAME(real)
#define NAME(x) EQGEO_TP_NAME(x)
#define INLINE static inline __attribute__((always_inline))

/* A[i,k] = sum_j y[j] C[j,i,k] (C stored (d2, d1, dout)); n = d1 * dout. */
INLINE void NAME(contract_y)(real *restrict A, const real *restrict C, const real *restrict y, int64_t d2, int64_t n) {
    real y0 = y[0];
    for (int64_t q = 0; q < n; ++q) A[q] = y0 * C[q];
    for (int64_t j = 1; j < d2; ++j) {
        real yj = y[j];
        const real *Cj = C + j * n;
        for (int64_t q = 0; q < n; ++q) A[q] += yj * Cj[q];
    }
}

/* gy[j] += sum_q C[j, q] gA[q] (one independent sum per j, in step, to hide FMA latency) */
INLINE void NAME(contract_back)(real *restrict gy, const real *restrict C, const real *restrict gA, int64_t d2, int64_t n) {
    for (int64_t j0 = 0; j0 < d2; j0 += 8) {
        const int64_t jn = d2 - j0 < 8 ? d2 - j0 : 8;
        real t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t q = 0; q < n; ++q) {
            const real g = gA[q];
            for (int64_t j = 0; j < jn; ++j) t[j] += C[(j0 + j) * n + q] * g;
        }
        for (int64_t j = 0; j < jn; ++j) gy[j0 + j] += t[j];
    }
}

/* sum_u a[u] b[u] in eight interleaved partial sums (vectorisable without -ffast-math) */
INLINE real NAME(dot)(const real *restrict a, const real *restrict b, int64_t n) {
    real p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t u = 0;
    for (; u + 8 <= n; u += 8)
        for (int l = 0; l < 8; ++l) p[l] += a[u + l] * b[u + l];
    real s = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
    for (; u < n; ++u) s += a[u] * b[u];
    return s;
}

/* Channel-minor block x[u*d + i] -> channel-major t[i*U + u], and back (o = or += t). */
INLINE void NAME(to_t_d)(real *restrict t, const real *restrict x, int64_t U, int64_t d) {
    for (int64_t u = 0; u < U; ++u)
        for (int64_t i = 0; i < d; ++i) t[i * U + u] = x[u * d + i];
}
static void NAME(to_t)(real *restrict t, const real *restrict x, int64_t U, int64_t d) {
    switch (d) {
    case 1: memcpy(t, x, sizeof(real) * U); break;
    case 3: NAME(to_t_d)(t, x, U, 3); break;
    case 5: NAME(to_t_d)(t, x, U, 5); break;
    case 7: NAME(to_t_d)(t, x, U, 7); break;
    default: NAME(to_t_d)(t, x, U, d); break;
    }
}
INLINE void NAME(from_t_d)(real *restrict o, const real *restrict t, int64_t U, int64_t d, int add) {
    if (add) {
        for (int64_t u = 0; u < U; ++u)
            for (int64_t k = 0; k < d; ++k) o[u * d + k] += t[k * U + u];
    } else {
        for (int64_t u = 0; u < U; ++u)
            for (int64_t k = 0; k < d; ++k) o[u * d + k] = t[k * U + u];
    }
}
static void NAME(from_t)(real *restrict o, const real *restrict t, int64_t U, int64_t d, int add) {
    switch (d) {
    case 1: NAME(from_t_d)(o, t, U, 1, add); break;
    case 3: NAME(from_t_d)(o, t, U, 3, add); break;
    case 5: NAME(from_t_d)(o, t, U, 5, add); break;
    case 7: NAME(from_t_d)(o, t, U, 7, add); break;
    default: NAME(from_t_d)(o, t, U, d, add); break;
    }
}

/* Vectors of 32 bytes (GNU C vector extensions; lowered to whatever the target has). */
typedef real NAME(vec) __attribute__((vector_size(32)));
#define vec NAME(vec)
#define VL ((int64_t)(sizeof(vec) / sizeof(real)))
INLINE vec NAME(vload)(const real *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void NAME(vstore)(real *p, vec v) { memcpy(p, &v, sizeof v); }
INLINE real NAME(vsum)(vec v) {
    real s = 0;
    for (int64_t l = 0; l < VL; ++l) s += v[l];
    return s;
}

/* One "uvu" path, one v: o[u*dout + k] (=|+=) s[u] sum_i XT[i*U + u] A[i*dout + k], for output
 * components kb <= k < kb + KN (KN <= 7). VL channels at a time: the KN accumulator vectors
 * stay in registers and are transposed into the feature layout on the way out. */
INLINE void NAME(uvu_fwd_k)(real *restrict o, const real *restrict XT, const real *restrict A, const real *restrict sp,
                           int64_t U, int64_t d1, int64_t dout, int64_t kb, const int64_t KN, int add) {
    int64_t u0 = 0;
    for (; u0 + VL <= U; u0 += VL) {
        vec acc[7];
        const vec x0 = NAME(vload)(XT + u0);
        for (int64_t k = 0; k < KN; ++k) acc[k] = x0 * A[kb + k];
        for (int64_t i = 1; i < d1; ++i) {
            const vec x = NAME(vload)(XT + i * U + u0);
            for (int64_t k = 0; k < KN; ++k) acc[k] += x * A[i * dout + kb + k];
        }
        if (sp) {
            const vec s = NAME(vload)(sp + u0);
            for (int64_t k = 0; k < KN; ++k) acc[k] *= s;
        }
        real T[7][VL];
        for (int64_t k = 0; k < KN; ++k) NAME(vstore)(T[k], acc[k]);
        real *restrict ou = o + u0 * dout + kb;
        if (add) {
            for (int64_t l = 0; l < VL; ++l)
                for (int64_t k = 0; k < KN; ++k) ou[l * dout + k] += T[k][l];
        } else {
            for (int64_t l = 0; l < VL; ++l)
                for (int64_t k = 0; k < KN; ++k) ou[l * dout + k] = T[k][l];
        }
    }
    for (; u0 < U; ++u0) { /* remaining channels */
        const real s = sp ? sp[u0] : (real)1;
        for (int64_t k = 0; k < KN; ++k) {
            real t = 0;
            for (int64_t i = 0; i < d1; ++i) t += XT[i * U + u0] * A[i * dout + kb + k];
            o[u0 * dout + kb + k] = add ? o[u0 * dout + kb + k] + s * t : s * t;
        }
    }
}

static void NAME(uvu_fwd)(real *restrict o, const real *restrict XT, const real *restrict A, const real *restrict sp,
                          int64_t U, int64_t d1, int64_t dout, int add) {
    switch (dout) {
    case 1: NAME(uvu_fwd_k)(o, XT, A, sp, U, d1, 1, 0, 1, add); return;
    case 3: NAME(uvu_fwd_k)(o, XT, A, sp, U, d1, 3, 0, 3, add); return;
    case 5: NAME(uvu_fwd_k)(o, XT, A, sp, U, d1, 5, 0, 5, add); return;
    case 7: NAME(uvu_fwd_k)(o, XT, A, sp, U, d1, 7, 0, 7, add); return;
    default:
        for (int64_t kb = 0; kb < dout; kb += 7) {
            const int64_t kn = dout - kb < 7 ? dout - kb : 7;
            NAME(uvu_fwd_k)(o, XT, A, sp, U, d1, dout, kb, kn, add);
        }
    }
}

/* Backward of one "uvu" path and one v (channel-major XT, GX, GT; DOUT = dout <= 7):
 *   H = A GT,  GX += s H,  acc = sum_i XT_i H_i (gradient of the weights),
 *   gA[i,k] = sum_u s[u] XT[i,u] GT[k,u]. */
INLINE void NAME(uvu_bwd_k)(const real *restrict XT, real *restrict GX, const real *restrict GT, const real *restrict A,
                           const real *restrict sp, real *restrict acc, real *restrict gA, int64_t U, int64_t d1,
                           const int64_t DOUT) {
    const int64_t Uv = U - U % VL;
    for (int64_t i = 0; i < d1; ++i) {
        const real *restrict xt = XT + i * U;
        real *restrict gx = GX + i * U;
        const real *restrict Ai = A + i * DOUT;
        vec ga[7];
        for (int64_t k = 0; k < DOUT; ++k) ga[k] = (vec){0};
        for (int64_t u0 = 0; u0 < Uv; u0 += VL) {
            vec G[7];
            for (int64_t k = 0; k < DOUT; ++k) G[k] = NAME(vload)(GT + k * U + u0);
            vec hv = G[0] * Ai[0];
            for (int64_t k = 1; k < DOUT; ++k) hv += G[k] * Ai[k];
            const vec x = NAME(vload)(xt + u0);
            vec sx = x;
            if (sp) {
                const vec sv = NAME(vload)(sp + u0);
                NAME(vstore)(gx + u0, NAME(vload)(gx + u0) + sv * hv);
                sx = sv * x;
                vec aw = x * hv;
                if (i > 0) aw += NAME(vload)(acc + u0);
                NAME(vstore)(acc + u0, aw);
            } else {
                NAME(vstore)(gx + u0, NAME(vload)(gx + u0) + hv);
            }
            for (int64_t k = 0; k < DOUT; ++k) ga[k] += sx * G[k];
        }
        real gs[7];
        for (int64_t k = 0; k < DOUT; ++k) gs[k] = NAME(vsum)(ga[k]);
        for (int64_t u = Uv; u < U; ++u) { /* remaining channels */
            real hs = 0;
            for (int64_t k = 0; k < DOUT; ++k) hs += Ai[k] * GT[k * U + u];
            const real s = sp ? sp[u] : (real)1;
            gx[u] += s * hs;
            if (sp) acc[u] = (i > 0 ? acc[u] : 0) + xt[u] * hs;
            for (int64_t k = 0; k < DOUT; ++k) gs[k] += s * xt[u] * GT[k * U + u];
        }
        for (int64_t k = 0; k < DOUT; ++k) gA[i * DOUT + k] = gs[k];
    }
}

/* Same for any dout (plain loops; used for dout > 7). */
static void NAME(uvu_bwd_any)(const real *restrict XT, real *restrict GX, const real *restrict GT, const real *restrict A,
                              const real *restrict sp, real *restrict acc, real *restrict gA, real *restrict H,
                              real *restrict SX, int64_t U, int64_t d1, int64_t dout) {
    for (int64_t i = 0; i < d1; ++i) {
        const real *restrict xt = XT + i * U;
        real *restrict gx = GX + i * U;
        for (int64_t u = 0; u < U; ++u) H[u] = A[i * dout] * GT[u];
        for (int64_t k = 1; k < dout; ++k)
            for (int64_t u = 0; u < U; ++u) H[u] += A[i * dout + k] * GT[k * U + u];
        const real *sx = xt;
        if (sp) {
            for (int64_t u = 0; u < U; ++u) {
                gx[u] += sp[u] * H[u];
                SX[u] = sp[u] * xt[u];
                acc[u] = (i > 0 ? acc[u] : 0) + xt[u] * H[u];
            }
            sx = SX;
        } else {
            for (int64_t u = 0; u < U; ++u) gx[u] += H[u];
        }
        for (int64_t k = 0; k < dout; ++k) gA[i * dout + k] = NAME(dot)(sx, GT + k * U, U);
    }
}

static void NAME(uvu_bwd)(const real *XT, real *GX, const real *GT, const real *A, const real *sp, real *acc, real *gA,
                          real *H, real *SX, int64_t U, int64_t d1, int64_t dout) {
    switch (dout) {
    case 1: NAME(uvu_bwd_k)(XT, GX, GT, A, sp, acc, gA, U, d1, 1); return;
    case 3: NAME(uvu_bwd_k)(XT, GX, GT, A, sp, acc, gA, U, d1, 3); return;
    case 5: NAME(uvu_bwd_k)(XT, GX, GT, A, sp, acc, gA, U, d1, 5); return;
    case 7: NAME(uvu_bwd_k)(XT, GX, GT, A, sp, acc, gA, U, d1, 7); return;
    default: NAME(uvu_bwd_any)(XT, GX, GT, A, sp, acc, gA, H, SX, U, d1, dout);
    }
}

typedef struct {
    real *XT, *GX, *OT, *A, *gA, *S, *H, *acc, *SX;
} NAME(scratch_t);

static NAME(scratch_t) NAME(carve)(real *base, const int64_t *h) {
    NAME(scratch_t) s;
    real *p = base;
#define EQGEO_TAKE(field, n) s.field = p, p += ((n) + 15) / 16 * 16 + 16
    EQGEO_TAKE(XT, h[H_DIM1]);
    EQGEO_TAKE(GX, h[H_DIM1]);
    EQGEO_TAKE(OT, h[H_MAXUDO]);
    EQGEO_TAKE(A, h[H_MAXA]);
    EQGEO_TAKE(gA, h[H_MAXA]);
    EQGEO_TAKE(S, h[H_MAXU]);
    EQGEO_TAKE(H, h[H_MAXU]);
    EQGEO_TAKE(acc, h[H_MAXU]);
    EQGEO_TAKE(SX, h[H_MAXU]);
#undef EQGEO_TAKE
    return s;
}

static int64_t NAME(scratch_stride)(const int64_t *h) {
    /* matches carve(): each piece rounded up to 16 entries plus 16 */
    int64_t n[9] = {h[H_DIM1], h[H_DIM1], h[H_MAXUDO], h[H_MAXA], h[H_MAXA], h[H_MAXU], h[H_MAXU], h[H_MAXU], h[H_MAXU]};
    int64_t t = 0;
    for (int q = 0; q < 9; ++q) t += (n[q] + 15) / 16 * 16 + 16;
    return t;
}

/* The weights of channel column v of a uvu path for u = 0..U-1 (NULL: the path has no weights):
 * the path's weights in place when V == 1, else gathered from stride V into S. */
static inline const real *NAME(uvu_weights)(const real *w, int64_t woff, int64_t U, int64_t V, int64_t v, real *S) {
    if (woff < 0) return NULL;
    if (V == 1) return w + woff;
    for (int64_t u = 0; u < U; ++u) S[u] = w[woff + u * V + v];
    return S;
}

typedef struct {
    const int64_t *hdr, *meta, *blocks1, *zeros;
    const real *cg, *x1, *x2, *w;
    real *out, *scratch;
} NAME(fwd_args);

static void NAME(fwd_range)(void *p, int64_t start, int64_t end, int tid) {
    const NAME(fwd_args) *a = p;
    const int64_t *h = a->hdr;
    const int64_t np = h[H_NPATHS], dim1 = h[H_DIM1], dim2 = h[H_DIM2], dimo = h[H_DIMO], ldw = h[H_LDW];
    NAME(scratch_t) sc = NAME(carve)(a->scratch + (int64_t)tid * NAME(scratch_stride)(h), h);
    for (int64_t n = start; n < end; ++n) {
        const real *x1 = a->x1 + n * dim1, *x2 = a->x2 + n * dim2, *w = a->w + n * ldw;
        real *out = a->out + n * dimo;
        for (int64_t z = 0; z < h[H_NZERO]; ++z) memset(out + a->zeros[2 * z], 0, sizeof(real) * a->zeros[2 * z + 1]);
        if (h[H_NUVU] > 0)
            for (int64_t b = 0; b < h[H_NB1]; ++b) {
                const int64_t *bl = a->blocks1 + 3 * b;
                NAME(to_t)(sc.XT + bl[0], x1 + bl[0], bl[1], bl[2]);
            }
        for (int64_t p = 0; p < np; ++p) {
            const int64_t *m = a->meta + p * NF;
            const int64_t U = m[F_U], V = m[F_V], d1 = m[F_D1], d2 = m[F_D2], dout = m[F_DO], woff = m[F_WOFF];
            const real *C = a->cg + m[F_COFF];
            const real *xb = x2 + m[F_OFF2];
            real *o = out + m[F_OFFO];
            real *restrict A = sc.A;
            if (m[F_MODE] == MODE_UVU) {
                const real *XTa = sc.XT + m[F_OFF1];
                for (int64_t v = 0; v < V; ++v) {
                    NAME(contract_y)(A, C, xb + v * d2, d2, d1 * dout);
                    const real *sp = NAME(uvu_weights)(w, woff, U, V, v, sc.S);
                    NAME(uvu_fwd)(o, XTa, A, sp, U, d1, dout, !(m[F_ASSIGN] && v == 0));
                }
            } else { /* uuu: A depends on the channel; plain loops in the feature layout */
                const real *xa = x1 + m[F_OFF1];
                for (int64_t u = 0; u < U; ++u) {
                    NAME(contract_y)(A, C, xb + u * d2, d2, d1 * dout);
                    const real s = woff >= 0 ? w[woff + u] : (real)1;
                    real *ou = o + u * dout;
                    const real *xu = xa + u * d1;
                    for (int64_t k = 0; k < dout; ++k) {
                        real t = 0;
                        for (int64_t i = 0; i < d1; ++i) t += xu[i] * A[i * dout + k];
                        ou[k] = m[F_ASSIGN] ? s * t : ou[k] + s * t;
                    }
                }
            }
        }
    }
}

/* Forward over all samples: writes every output entry of the native paths' blocks and zeroes
 * the ranges in `zeros`; other entries of `out` are left untouched. */
int NAME(eqgeo_tp_forward)(const int64_t *hdr, const int64_t *meta, const int64_t *blocks1, const int64_t *zeros,
                           const real *cg, const real *x1, const real *x2, const real *w, real *out, int nthreads) {
    nthreads = clamp_threads(nthreads);
    real *scratch = malloc(sizeof(real) * (size_t)NAME(scratch_stride)(hdr) * (size_t)nthreads);
    if (!scratch) return -1;
    NAME(fwd_args) a = {hdr, meta, blocks1, zeros, cg, x1, x2, w, out, scratch};
    parallel_for(hdr[H_B], nthreads, NAME(fwd_range), &a);
    free(scratch);
    return 0;
}

typedef struct {
    const int64_t *hdr, *meta, *blocks1;
    const real *cg, *go, *x1, *x2, *w;
    real *gx1, *gx2, *gw, *scratch, *gw_local;
} NAME(bwd_args);

static void NAME(bwd_range)(void *p, int64_t start, int64_t end, int tid) {
    const NAME(bwd_args) *a = p;
    const int64_t *h = a->hdr;
    const int64_t np = h[H_NPATHS], dim1 = h[H_DIM1], dim2 = h[H_DIM2], dimo = h[H_DIMO], ldw = h[H_LDW];
    const int shared = ldw == 0;
    NAME(scratch_t) sc = NAME(carve)(a->scratch + (int64_t)tid * NAME(scratch_stride)(h), h);
    for (int64_t n = start; n < end; ++n) {
        const real *x1 = a->x1 + n * dim1, *x2 = a->x2 + n * dim2, *w = a->w + n * ldw, *go = a->go + n * dimo;
        real *gx1 = a->gx1 + n * dim1, *gx2 = a->gx2 + n * dim2;
        real *gw = shared ? a->gw_local + (int64_t)tid * h[H_NUMEL] : a->gw + n * ldw;
        memset(gx2, 0, sizeof(real) * dim2);
        memset(sc.GX, 0, sizeof(real) * dim1);
        if (h[H_NUVU] > 0)
            for (int64_t b = 0; b < h[H_NB1]; ++b) {
                const int64_t *bl = a->blocks1 + 3 * b;
                NAME(to_t)(sc.XT + bl[0], x1 + bl[0], bl[1], bl[2]);
            }
        /* uvu paths (they come first), channel-major */
        for (int64_t p = 0; p < h[H_NUVU]; ++p) {
            const int64_t *m = a->meta + p * NF;
            const int64_t U = m[F_U], V = m[F_V], d1 = m[F_D1], d2 = m[F_D2], dout = m[F_DO], woff = m[F_WOFF];
            const real *C = a->cg + m[F_COFF];
            const real *xb = x2 + m[F_OFF2];
            const real *XTa = sc.XT + m[F_OFF1];
            real *GXa = sc.GX + m[F_OFF1], *gxb = gx2 + m[F_OFF2];
            real *restrict A = sc.A, *restrict gA = sc.gA, *restrict GT = sc.OT, *restrict H = sc.H;
            real *restrict acc = sc.acc, *restrict SX = sc.SX;
            NAME(to_t)(GT, go + m[F_OFFO], U, dout);
            for (int64_t v = 0; v < V; ++v) {
                NAME(contract_y)(A, C, xb + v * d2, d2, d1 * dout);
                const real *sp = NAME(uvu_weights)(w, woff, U, V, v, sc.S);
                NAME(uvu_bwd)(XTa, GXa, GT, A, sp, acc, gA, H, SX, U, d1, dout);
                if (woff >= 0) {
                    real *g = gw + woff + v;
                    if (shared)
                        for (int64_t u = 0; u < U; ++u) g[u * V] += acc[u];
                    else
                        for (int64_t u = 0; u < U; ++u) g[u * V] = acc[u];
                }
                NAME(contract_back)(gxb + v * d2, C, gA, d2, d1 * dout);
            }
        }
        for (int64_t b = 0; b < h[H_NB1]; ++b) {
            const int64_t *bl = a->blocks1 + 3 * b;
            NAME(from_t)(gx1 + bl[0], sc.GX + bl[0], bl[1], bl[2], 0);
        }
        /* uuu paths, in the feature layout */
        for (int64_t p = h[H_NUVU]; p < np; ++p) {
            const int64_t *m = a->meta + p * NF;
            const int64_t U = m[F_U], d1 = m[F_D1], d2 = m[F_D2], dout = m[F_DO], woff = m[F_WOFF];
            const real *C = a->cg + m[F_COFF];
            const real *xa = x1 + m[F_OFF1], *xb = x2 + m[F_OFF2], *g = go + m[F_OFFO];
            real *gxa = gx1 + m[F_OFF1], *gxb = gx2 + m[F_OFF2];
            real *restrict A = sc.A, *restrict gA = sc.gA;
            for (int64_t u = 0; u < U; ++u) {
                NAME(contract_y)(A, C, xb + u * d2, d2, d1 * dout);
                const real s = woff >= 0 ? w[woff + u] : (real)1;
                const real *xu = xa + u * d1, *gu = g + u * dout;
                real dot = 0;
                for (int64_t i = 0; i < d1; ++i) {
                    real Hi = 0;
                    for (int64_t k = 0; k < dout; ++k) Hi += A[i * dout + k] * gu[k];
                    gxa[u * d1 + i] += s * Hi;
                    dot += xu[i] * Hi;
                    for (int64_t k = 0; k < dout; ++k) gA[i * dout + k] = s * xu[i] * gu[k];
                }
                if (woff >= 0) {
                    if (shared)
                        gw[woff + u] += dot;
                    else
                        gw[woff + u] = dot;
                }
                NAME(contract_back)(gxb + u * d2, C, gA, d2, d1 * dout);
            }
        }
    }
}

/* Backward over all samples: writes all of gx1 and gx2 (entries no native path uses are
 * zero) and the gradient of the native paths' weights: per sample (ldw > 0) written, shared
 * (ldw == 0) added to gw[0]. */
int NAME(eqgeo_tp_backward)(const int64_t *hdr, const int64_t *meta, const int64_t *blocks1, const real *cg,
                            const real *go, const real *x1, const real *x2, const real *w, real *gx1, real *gx2,
                            real *gw, int nthreads) {
    nthreads = clamp_threads(nthreads);
    const int64_t numel = hdr[H_NUMEL];
    const int shared = hdr[H_LDW] == 0;
    real *scratch = malloc(sizeof(real) * (size_t)NAME(scratch_stride)(hdr) * (size_t)nthreads);
    real *gw_local = shared ? calloc((size_t)(numel > 0 ? numel : 1) * (size_t)nthreads, sizeof(real)) : NULL;
    if (!scratch || (shared && !gw_local)) {
        free(scratch);
        free(gw_local);
        return -1;
    }
    NAME(bwd_args) a = {hdr, meta, blocks1, cg, go, x1, x2, w, gx1, gx2, gw, scratch, gw_local};
    parallel_for(hdr[H_B], nthreads, NAME(bwd_range), &a);
    if (shared) /* only the weights of native paths are non-zero in the local buffers */
        for (int t = 0; t < nthreads; ++t)
            for (int64_t q = 0; q < numel; ++q) gw[q] += gw_local[(int64_t)t * numel + q];
    free(scratch);
    free(gw_local);
    return 0;
}

#undef real
#undef NAME
#undef INLINE
#undef vec
#undef VL

#endif
