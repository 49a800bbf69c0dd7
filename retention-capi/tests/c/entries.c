/* Every entry not exercised by smoke.c and training.c, called from C with the header's
 * signatures, each checked against another entry computing the same function on the CPU:
 * - parallel and recurrent forwards equal the chunkwise forward (1e-5 of the largest |o|);
 * - a varlen forward of two packed sequences equals two chunkwise forwards, and its backward
 *   (recurrent form, chunk 0) equals the chunkwise backward of each sequence;
 * - the gated epilogue forward and backward: dg against a central difference of the forward;
 * - a NULL stream is accepted; a pool snapshot restored into another slot steps identically. */
#include "retention.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { T = 6, T0 = 2, H = 2, K = 3, V = 2, NQ = T * H * K, NV = T * H * V, NS = H * K * V };

static RetentionTensor desc(void *p, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    RetentionTensor t;
    int64_t s[4] = {a, b, c, d}, acc = 1;
    memset(&t, 0, sizeof t);
    t.data = p; t.dtype = RETENTION_F32; t.ndim = ndim;
    for (int i = ndim - 1; i >= 0; i--) { t.shape[i] = s[i]; t.strides[i] = acc; acc *= s[i]; }
    return t;
}

static int fail(const char *what) { printf("%s: %s\n", what, retention_last_error()); return 1; }

static double rel(const float *a, const float *b, int n) {
    double m = 0, d = 0;
    for (int i = 0; i < n; i++) { m = fmax(m, fabs(b[i])); d = fmax(d, fabs(a[i] - b[i])); }
    return m > 0 ? d / m : INFINITY;
}

int main(void) {
    float q[NQ], k[NQ], v[NV], d_o[NV], oc[NV], op[NV], orc[NV], ov[NV], sv[2 * NS];
    for (int i = 0; i < NQ; i++) { q[i] = (float)((i % 7) - 3) / 4.0f; k[i] = (float)((i % 5) - 2) / 3.0f; }
    for (int i = 0; i < NV; i++) { v[i] = (float)((i % 3) - 1) / 2.0f; d_o[i] = (float)((i % 4) - 1) / 5.0f; }
    RetentionHandle *h = NULL;
    if (retention_create(RETENTION_DEVICE_CPU, 0, H, 0, 0.0, &h) != RETENTION_OK) return fail("create");
    if (retention_set_stream(h, NULL) != RETENTION_OK) return fail("set_stream NULL");
    RetentionTensor tq = desc(q, 4, 1, T, H, K), tk = desc(k, 4, 1, T, H, K), tv = desc(v, 4, 1, T, H, V);
    RetentionTensor toc = desc(oc, 4, 1, T, H, V), top = desc(op, 4, 1, T, H, V), tor = desc(orc, 4, 1, T, H, V);
    if (retention_chunkwise_forward(h, &tq, &tk, &tv, NULL, 4, &toc, NULL) != RETENTION_OK) return fail("chunkwise");
    if (retention_parallel_forward(h, &tq, &tk, &tv, &top) != RETENTION_OK) return fail("parallel");
    if (retention_recurrent_forward(h, &tq, &tk, &tv, NULL, &tor, NULL) != RETENTION_OK) return fail("recurrent");
    double e_forms = fmax(rel(op, oc, NV), rel(orc, oc, NV));
    if (!(e_forms < 1e-5)) { printf("forms differ: %g\n", e_forms); return 1; }

    /* Varlen: sequences [0, T0) and [T0, T) against one chunkwise call per sequence. */
    int64_t cu[3] = {0, T0, T};
    RetentionTensor tov = desc(ov, 4, 1, T, H, V), tsv = desc(sv, 4, 2, H, K, V);
    if (retention_chunkwise_varlen_forward(h, &tq, &tk, &tv, cu, 3, NULL, 2, &tov, &tsv) != RETENTION_OK) return fail("varlen");
    float o2[NV], s2[NS], gq[NQ], gk[NQ], gv[NV], g2q[NQ], g2k[NQ], g2v[NV];
    double e_var = 0, e_vbw = 0;
    RetentionTensor vq = desc(gq, 4, 1, T, H, K), vk = desc(gk, 4, 1, T, H, K), vv = desc(gv, 4, 1, T, H, V);
    RetentionTensor tdo = desc(d_o, 4, 1, T, H, V);
    RetentionGradients vg = {&vq, &vk, &vv, NULL, NULL};
    if (retention_chunkwise_varlen_backward(h, &tq, &tk, &tv, cu, 3, NULL, 0, &tdo, NULL, &vg) != RETENTION_OK) return fail("varlen backward");
    for (int n = 0; n < 2; n++) {
        int64_t t0 = cu[n], len = cu[n + 1] - cu[n];
        RetentionTensor sq = desc(q + t0 * H * K, 4, 1, len, H, K), sk = desc(k + t0 * H * K, 4, 1, len, H, K);
        RetentionTensor svv = desc(v + t0 * H * V, 4, 1, len, H, V), so = desc(o2, 4, 1, len, H, V);
        RetentionTensor ss = desc(s2, 4, 1, H, K, V), sdo = desc(d_o + t0 * H * V, 4, 1, len, H, V);
        if (retention_chunkwise_forward(h, &sq, &sk, &svv, NULL, 2, &so, &ss) != RETENTION_OK) return fail("per-sequence");
        e_var = fmax(e_var, fmax(rel(ov + t0 * H * V, o2, (int)len * H * V), rel(sv + n * NS, s2, NS)));
        RetentionTensor bq = desc(g2q, 4, 1, len, H, K), bk = desc(g2k, 4, 1, len, H, K), bv = desc(g2v, 4, 1, len, H, V);
        RetentionGradients bg = {&bq, &bk, &bv, NULL, NULL};
        if (retention_chunkwise_backward(h, &sq, &sk, &svv, NULL, 3, &sdo, NULL, &bg) != RETENTION_OK) return fail("per-sequence backward");
        e_vbw = fmax(e_vbw, fmax(rel(gq + t0 * H * K, g2q, (int)len * H * K), rel(gk + t0 * H * K, g2k, (int)len * H * K)));
        e_vbw = fmax(e_vbw, rel(gv + t0 * H * V, g2v, (int)len * H * V));
    }
    if (!(e_var < 1e-5) || !(e_vbw < 1e-5)) { printf("varlen differs: %g, backward %g\n", e_var, e_vbw); return 1; }

    /* Epilogue: dg[i] against (L(g + eps e_i) - L(g - eps e_i)) / 2eps, L = sum(y * d_o). */
    float g[NV], y[NV], dgo[NV], dgg[NV];
    for (int i = 0; i < NV; i++) g[i] = (float)((i % 5) - 2) / 2.0f;
    RetentionTensor to = desc(oc, 4, 1, T, H, V), tg = desc(g, 4, 1, T, H, V), ty = desc(y, 4, 1, T, H, V);
    RetentionTensor tdgo = desc(dgo, 4, 1, T, H, V), tdgg = desc(dgg, 4, 1, T, H, V);
    if (retention_gated_epilogue_backward(h, &to, &tg, 1e-6, &tdo, &tdgo, &tdgg) != RETENTION_OK) return fail("epilogue backward");
    double e_epi = 0, eps = 1e-2, gmax = 0;
    for (int i = 0; i < NV; i++) {
        double l[2];
        float keep = g[i];
        for (int side = 0; side < 2; side++) {
            g[i] = keep + (side ? -eps : eps);
            if (retention_gated_epilogue_forward(h, &to, &tg, 1e-6, &ty) != RETENTION_OK) return fail("epilogue");
            l[side] = 0;
            for (int j = 0; j < NV; j++) l[side] += (double)y[j] * d_o[j];
        }
        g[i] = keep;
        e_epi = fmax(e_epi, fabs((l[0] - l[1]) / (2 * eps) - dgg[i]));
        gmax = fmax(gmax, fabs(dgg[i]));
    }
    if (!(e_epi < 1e-3 * fmax(gmax, 1.0))) { printf("epilogue dg off by %g\n", e_epi); return 1; }

    /* Snapshot of slot a restored into slot b: the next step is identical. */
    RetentionStatePool *p = NULL;
    uint64_t a = 0, b = 0;
    float snap[NS], oa[H * V], ob[H * V];
    RetentionTensor tsnap = desc(snap, 4, 1, H, K, V);
    RetentionTensor rq = desc(q, 3, 1, H, K, 0), rk = desc(k, 3, 1, H, K, 0), rv = desc(v, 3, 1, H, V, 0);
    RetentionTensor ra = desc(oa, 3, 1, H, V, 0), rb = desc(ob, 3, 1, H, V, 0);
    if (retention_state_pool_create(h, H, K, V, 1, 2, &p) != RETENTION_OK || retention_state_pool_alloc(p, &a) != RETENTION_OK ||
        retention_state_pool_alloc(p, &b) != RETENTION_OK) return fail("pool");
    if (retention_state_pool_step(p, 0, &a, 1, &rq, &rk, &rv, &ra) != RETENTION_OK ||
        retention_state_pool_snapshot(p, a, &tsnap) != RETENTION_OK ||
        retention_state_pool_restore(p, b, &tsnap) != RETENTION_OK ||
        retention_state_pool_step(p, 0, &a, 1, &rq, &rk, &rv, &ra) != RETENTION_OK ||
        retention_state_pool_step(p, 0, &b, 1, &rq, &rk, &rv, &rb) != RETENTION_OK) return fail("snapshot");
    if (memcmp(oa, ob, sizeof oa) != 0) { printf("restored slot steps differently\n"); return 1; }
    if (retention_state_pool_destroy(p) != RETENTION_OK || retention_destroy(h) != RETENTION_OK) return fail("destroy");
    printf("ok forms %g; varlen %g, backward %g; epilogue dg %g\n", e_forms, e_var, e_vbw, e_epi);
    return 0;
}
