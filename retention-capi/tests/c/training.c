/* bf16 inputs, the backward and the error paths through the C ABI on the CPU:
 * - a bf16 chunkwise forward equals the f32 forward on the same (bf16-exact) inputs within
 *   the 16-bit tolerance (relative RMSE 5e-3);
 * - the chunkwise backward (chunk 2) equals the parallel backward: dq, dk, dv and dlog_gamma
 *   within 1e-4 of the largest magnitude;
 * - a strided tensor gives RETENTION_NON_CONTIGUOUS with a message naming the stride, and the
 *   backward on the emulated device gives RETENTION_UNSUPPORTED with a message. */
#include "retention.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { B = 1, T = 5, H = 2, K = 4, V = 3, NQ = B * T * H * K, NV = B * T * H * V };

static RetentionTensor desc(void *p, int32_t dtype, int ndim, const int64_t *shape) {
    RetentionTensor t;
    memset(&t, 0, sizeof t);
    t.data = p; t.dtype = dtype; t.ndim = ndim;
    int64_t acc = 1;
    for (int i = ndim - 1; i >= 0; i--) { t.shape[i] = shape[i]; t.strides[i] = acc; acc *= shape[i]; }
    return t;
}

/* bf16 bits of x (round to nearest even) and back. */
static uint16_t to_bf16(float x) { uint32_t u; memcpy(&u, &x, 4); return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16); }
static float from_bf16(uint16_t b) { uint32_t u = (uint32_t)b << 16; float x; memcpy(&x, &u, 4); return x; }

static int fail(const char *what) { printf("%s: %s\n", what, retention_last_error()); return 1; }

static double max_abs(const float *a, int n) { double m = 0; for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i])); return m; }
static double max_diff(const float *a, const float *b, int n) { double m = 0; for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i])); return m; }

int main(void) {
    static const int64_t sq[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sh[1] = {H};
    float q[NQ], k[NQ], v[NV], o[NV], d_o[NV];
    uint16_t qb[NQ], kb[NQ], vb[NV], ob[NV];
    for (int i = 0; i < NQ; i++) {
        qb[i] = to_bf16((float)((i % 7) - 3) / 4.0f); q[i] = from_bf16(qb[i]);
        kb[i] = to_bf16((float)((i % 5) - 2) / 3.0f); k[i] = from_bf16(kb[i]);
    }
    for (int i = 0; i < NV; i++) {
        vb[i] = to_bf16((float)((i % 3) - 1) / 2.0f); v[i] = from_bf16(vb[i]);
        d_o[i] = (float)((i % 4) - 1) / 5.0f;
    }
    RetentionHandle *h = NULL;
    if (retention_create(RETENTION_DEVICE_CPU, 0, H, 0, 0.0, &h) != RETENTION_OK) return fail("create");
    RetentionTensor tq = desc(q, RETENTION_F32, 4, sq), tk = desc(k, RETENTION_F32, 4, sq);
    RetentionTensor tv = desc(v, RETENTION_F32, 4, sv), to = desc(o, RETENTION_F32, 4, sv);
    RetentionTensor bq = desc(qb, RETENTION_BF16, 4, sq), bk = desc(kb, RETENTION_BF16, 4, sq);
    RetentionTensor bv = desc(vb, RETENTION_BF16, 4, sv), bo = desc(ob, RETENTION_BF16, 4, sv);
    if (retention_chunkwise_forward(h, &tq, &tk, &tv, NULL, 2, &to, NULL) != RETENTION_OK) return fail("f32 forward");
    if (retention_chunkwise_forward(h, &bq, &bk, &bv, NULL, 2, &bo, NULL) != RETENTION_OK) return fail("bf16 forward");
    double se = 0, sr = 0;
    for (int i = 0; i < NV; i++) { double d = from_bf16(ob[i]) - o[i]; se += d * d; sr += (double)o[i] * o[i]; }
    double rrmse = sqrt(se / sr);
    if (!(rrmse <= 5e-3)) { printf("bf16 relative RMSE %g\n", rrmse); return 1; }

    /* Backward: chunkwise (chunk 2) against parallel. */
    float cq[NQ], ck[NQ], cv[NV], cg[H], pq[NQ], pk[NQ], pv[NV], pg[H];
    RetentionTensor tdo = desc(d_o, RETENTION_F32, 4, sv);
    RetentionTensor c0 = desc(cq, RETENTION_F32, 4, sq), c1 = desc(ck, RETENTION_F32, 4, sq);
    RetentionTensor c2 = desc(cv, RETENTION_F32, 4, sv), c3 = desc(cg, RETENTION_F32, 1, sh);
    RetentionTensor p0 = desc(pq, RETENTION_F32, 4, sq), p1 = desc(pk, RETENTION_F32, 4, sq);
    RetentionTensor p2 = desc(pv, RETENTION_F32, 4, sv), p3 = desc(pg, RETENTION_F32, 1, sh);
    RetentionGradients gc = {&c0, &c1, &c2, NULL, &c3}, gp = {&p0, &p1, &p2, NULL, &p3};
    if (retention_chunkwise_backward(h, &tq, &tk, &tv, NULL, 2, &tdo, NULL, &gc) != RETENTION_OK) return fail("chunkwise backward");
    if (retention_parallel_backward(h, &tq, &tk, &tv, &tdo, &gp) != RETENTION_OK) return fail("parallel backward");
    double err = fmax(fmax(max_diff(cq, pq, NQ) / max_abs(pq, NQ), max_diff(ck, pk, NQ) / max_abs(pk, NQ)),
                      fmax(max_diff(cv, pv, NV) / max_abs(pv, NV), max_diff(cg, pg, H) / max_abs(pg, H)));
    if (!(err <= 1e-4) || max_abs(pq, NQ) == 0.0) { printf("backward forms differ by %g\n", err); return 1; }

    /* Error paths, each with a message. */
    RetentionTensor strided = tq;
    strided.strides[3] = 2;
    RetentionStatus st = retention_chunkwise_forward(h, &strided, &tk, &tv, NULL, 2, &to, NULL);
    if (st != RETENTION_NON_CONTIGUOUS || strstr(retention_last_error(), "stride") == NULL) { printf("strided gave %d\n", (int)st); return 1; }
    RetentionHandle *e = NULL;
    if (retention_create(RETENTION_DEVICE_EMULATED, 0, H, 0, 0.0, &e) != RETENTION_OK) return fail("create emulated");
    st = retention_parallel_backward(e, &tq, &tk, &tv, &tdo, &gp);
    if (st != RETENTION_UNSUPPORTED || strlen(retention_last_error()) == 0) { printf("emulated backward gave %d\n", (int)st); return 1; }
    printf("ok bf16 rRMSE %g; backward forms %g; %s\n", rrmse, err, retention_last_error());
    if (retention_destroy(e) != RETENTION_OK || retention_destroy(h) != RETENTION_OK) return 1;
    return 0;
}
