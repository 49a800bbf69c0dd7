/* retention.h: the C ABI of the retention library (crate retention-capi).
 * Kept equal to retention-capi/src/lib.rs by retention-capi/tests/c_abi.rs, which compiles
 * tests/c/smoke.c against this header and runs it.
 * Scope: CPU device, f32, contiguous token-major layouts:
 *   q, k [B, T, H, K]; v, o [B, T, H, V]; states [B, H, K, V] (f32).
 * Every function returns a RetentionStatus; on failure retention_last_error() gives a message
 * valid until the next call on the same thread. */
#ifndef RETENTION_H
#define RETENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum RetentionStatus {
    RETENTION_OK = 0,
    RETENTION_NULL_POINTER = 1,
    RETENTION_BAD_DTYPE = 2,
    RETENTION_BAD_SHAPE = 3,
    RETENTION_NON_CONTIGUOUS = 4,
    RETENTION_INVALID_HANDLE = 5,
    RETENTION_UNSUPPORTED_DEVICE = 6,
    RETENTION_LIBRARY = 7,
    RETENTION_PANIC = 8,
    RETENTION_INVALID_ARGUMENT = 9
} RetentionStatus;

typedef enum RetentionDtype {
    RETENTION_F32 = 0,
    RETENTION_F16 = 1,
    RETENTION_BF16 = 2
} RetentionDtype;

typedef enum RetentionDeviceKind {
    RETENTION_DEVICE_CPU = 0,
    RETENTION_DEVICE_CUDA = 1
} RetentionDeviceKind;

/* A borrowed tensor; strides in elements, contiguous row-major only. */
typedef struct RetentionTensor {
    void *data;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[4];
    int64_t strides[4];
} RetentionTensor; /* ndim 4 for the forwards, 3 for the decode step */

typedef struct RetentionHandle RetentionHandle;

const char *retention_last_error(void);

/* scale <= 0 means the default 1/sqrt(K). */
RetentionStatus retention_create(int32_t device, uint32_t heads, uint32_t head_offset,
                                 double scale, RetentionHandle **out);
RetentionStatus retention_destroy(RetentionHandle *h);

/* initial_state and final_state may be NULL. */
RetentionStatus retention_chunkwise_forward(const RetentionHandle *h, const RetentionTensor *q,
                                            const RetentionTensor *k, const RetentionTensor *v,
                                            const RetentionTensor *initial_state, uint32_t chunk,
                                            const RetentionTensor *o,
                                            const RetentionTensor *final_state);
RetentionStatus retention_recurrent_forward(const RetentionHandle *h, const RetentionTensor *q,
                                            const RetentionTensor *k, const RetentionTensor *v,
                                            const RetentionTensor *initial_state,
                                            const RetentionTensor *o,
                                            const RetentionTensor *final_state);
RetentionStatus retention_parallel_forward(const RetentionHandle *h, const RetentionTensor *q,
                                           const RetentionTensor *k, const RetentionTensor *v,
                                           const RetentionTensor *o);

/* out = RMSNorm_head(o) * swish(g), all [B, T, H, V]. */
RetentionStatus retention_gated_epilogue_forward(const RetentionHandle *h, const RetentionTensor *o,
                                                 const RetentionTensor *g, double eps,
                                                 const RetentionTensor *out);

/* Decode over a state pool. Slot ids are never reused; a freed id is an error. */
typedef struct RetentionStatePool RetentionStatePool;
RetentionStatus retention_state_pool_create(const RetentionHandle *h, uint32_t heads, uint32_t dk,
                                            uint32_t dv, uint32_t layers, uint32_t capacity,
                                            RetentionStatePool **out);
RetentionStatus retention_state_pool_destroy(RetentionStatePool *p);
RetentionStatus retention_state_pool_alloc(RetentionStatePool *p, uint64_t *out_slot);
RetentionStatus retention_state_pool_free(RetentionStatePool *p, uint64_t slot);
/* q, k [N, H, K], v, o [N, H, V] (ndim 3); row i belongs to slots[i]. */
RetentionStatus retention_state_pool_step(RetentionStatePool *p, uint32_t layer,
                                          const uint64_t *slots, uint32_t n,
                                          const RetentionTensor *q, const RetentionTensor *k,
                                          const RetentionTensor *v, const RetentionTensor *o);

#ifdef __cplusplus
}
#endif

#endif /* RETENTION_H */
