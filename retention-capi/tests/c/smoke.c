/* Chunkwise forward on the CPU through the C ABI, checked against the recurrent form computed
 * here by hand; a decode step through a state pool; then a bad shape must give RETENTION_BAD_SHAPE and a message. */
#include "retention.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { B = 1, T = 5, H = 2, K = 3, V = 2 };

static RetentionTensor desc(float *p, int64_t a, int64_t b, int64_t c, int64_t d) {
    RetentionTensor t;
    memset(&t, 0, sizeof t);
    t.data = p; t.dtype = RETENTION_F32; t.ndim = 4;
    t.shape[0] = a; t.shape[1] = b; t.shape[2] = c; t.shape[3] = d;
    t.strides[3] = 1; t.strides[2] = d; t.strides[1] = c * d; t.strides[0] = b * c * d;
    return t;
}

int main(void) {
    float q[B * T * H * K], k[B * T * H * K], v[B * T * H * V], o[B * T * H * V];
    float hs[B * H * K * V];
    for (int i = 0; i < B * T * H * K; i++) { q[i] = (float)((i % 7) - 3) / 4.0f; k[i] = (float)((i % 5) - 2) / 3.0f; }
    for (int i = 0; i < B * T * H * V; i++) v[i] = (float)((i % 3) - 1) / 2.0f;
    RetentionHandle *h = NULL;
    if (retention_create(RETENTION_DEVICE_CPU, 0, H, 0, 0.0, &h) != RETENTION_OK) { printf("create: %s\n", retention_last_error()); return 1; }
    RetentionTensor tq = desc(q, B, T, H, K), tk = desc(k, B, T, H, K), tv = desc(v, B, T, H, V);
    RetentionTensor to = desc(o, B, T, H, V), ts = desc(hs, B, H, K, V);
    if (retention_chunkwise_forward(h, &tq, &tk, &tv, NULL, 2, &to, &ts) != RETENTION_OK) { printf("chunkwise: %s\n", retention_last_error()); return 1; }
    /* Recurrence: S_t = g S_{t-1} + k_t^T v_t; o_t = scale q_t S_t; g = 1 - 2^(-5-h). */
    double scale = 1.0 / sqrt((double)K), err = 0.0;
    for (int hh = 0; hh < H; hh++) {
        double g = 1.0 - pow(2.0, -5.0 - hh), S[K][V];
        memset(S, 0, sizeof S);
        for (int t = 0; t < T; t++) {
            for (int a = 0; a < K; a++) for (int c = 0; c < V; c++)
                S[a][c] = g * S[a][c] + k[(t * H + hh) * K + a] * v[(t * H + hh) * V + c];
            for (int c = 0; c < V; c++) {
                double acc = 0.0;
                for (int a = 0; a < K; a++) acc += q[(t * H + hh) * K + a] * S[a][c];
                err = fmax(err, fabs(scale * acc - o[(t * H + hh) * V + c]));
            }
        }
        for (int a = 0; a < K; a++) for (int c = 0; c < V; c++)
            err = fmax(err, fabs(S[a][c] - hs[(hh * K + a) * V + c]));
    }
    if (err > 1e-4) { printf("max abs error %g\n", err); return 1; }
    /* Decode: token by token through a pool, equal to the chunkwise output. */
    RetentionStatePool *pool = NULL;
    uint64_t slot = 0;
    if (retention_state_pool_create(h, H, K, V, 1, 4, &pool) != RETENTION_OK ||
        retention_state_pool_alloc(pool, &slot) != RETENTION_OK) { printf("pool: %s\n", retention_last_error()); return 1; }
    for (int t = 0; t < T; t++) {
        float ot[H * V];
        RetentionTensor sq = desc(q + t * H * K, 1, H, K, 1), sk = desc(k + t * H * K, 1, H, K, 1);
        RetentionTensor sv = desc(v + t * H * V, 1, H, V, 1), so = desc(ot, 1, H, V, 1);
        sq.ndim = sk.ndim = sv.ndim = so.ndim = 3;
        sq.strides[2] = sk.strides[2] = sv.strides[2] = so.strides[2] = 1;
        sq.strides[1] = sk.strides[1] = K; sv.strides[1] = so.strides[1] = V;
        if (retention_state_pool_step(pool, 0, &slot, 1, &sq, &sk, &sv, &so) != RETENTION_OK) { printf("step: %s\n", retention_last_error()); return 1; }
        for (int i = 0; i < H * V; i++) err = fmax(err, fabs(ot[i] - o[t * H * V + i]));
    }
    if (err > 1e-4 || retention_state_pool_free(pool, slot) != RETENTION_OK ||
        retention_state_pool_destroy(pool) != RETENTION_OK) { printf("decode error %g\n", err); return 1; }
    RetentionTensor bad = desc(k, B, T, H, K - 1);
    RetentionStatus st = retention_chunkwise_forward(h, &tq, &bad, &tv, NULL, 2, &to, NULL);
    if (st != RETENTION_BAD_SHAPE || strlen(retention_last_error()) == 0) { printf("bad shape gave %d\n", (int)st); return 1; }
    printf("ok max abs error %g; bad shape: %s\n", err, retention_last_error());
    if (retention_destroy(h) != RETENTION_OK) return 1;
    return 0;
}
