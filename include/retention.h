/* retention.h: the C ABI of the retention library (crate retention-capi).
 * Kept equal to retention-capi/src by its tests: c_abi_devices.rs compares the declared
 * names with the exported ones, c_abi.rs compiles tests/c/{smoke,training,entries}.c (which
 * call every entry) against this header with -Wall -Wextra -Werror and runs them.
 *
 * Layouts (dense row-major, token-major):
 *   q, k [B, T, H, K]; v, o [B, T, H, V]; states [B, H, K, V] f32;
 *   varlen: packed [1, sum T, H, .] plus cu_seqlens (N + 1 host int64 bounds), states [N, H, K, V].
 * q, k, v, o (and their gradients) share one dtype: F32, F16 or BF16; states, dh0 and
 * dlog_gamma [H] are always F32.
 * Memory: host pointers on the CPU and the emulator; CUdeviceptr on CUDA, on the stream set
 * with retention_set_stream (snapshots and cu_seqlens stay host memory). Every op runs on
 * every device on the caller's memory, except the varlen backward: CPU handles only
 * (RETENTION_UNSUPPORTED elsewhere).
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
    RETENTION_INVALID_ARGUMENT = 9,
    RETENTION_UNSUPPORTED = 10
} RetentionStatus;

typedef enum RetentionDtype {
    RETENTION_F32 = 0,
    RETENTION_F16 = 1,
    RETENTION_BF16 = 2
} RetentionDtype;

typedef enum RetentionDeviceKind {
    RETENTION_DEVICE_CPU = 0,
    RETENTION_DEVICE_CUDA = 1,
    RETENTION_DEVICE_EMULATED = 2
} RetentionDeviceKind;

/* A borrowed tensor; strides in elements, dense row-major only (size-1 dims are free). */
typedef struct RetentionTensor {
    void *data;
    int32_t dtype;
    int32_t ndim;
    int64_t shape[4];
    int64_t strides[4];
} RetentionTensor; /* ndim 4 for sequences and states, 3 for decode rows, 1 for dlog_gamma */

/* Where a backward writes; dh0 and dlog_gamma may be NULL (dh0 must be for the parallel form). */
typedef struct RetentionGradients {
    const RetentionTensor *dq;
    const RetentionTensor *dk;
    const RetentionTensor *dv;
    const RetentionTensor *dh0;
    const RetentionTensor *dlog_gamma;
} RetentionGradients;

typedef struct RetentionHandle RetentionHandle;

const char *retention_last_error(void);

/* device: a RetentionDeviceKind; ordinal picks the GPU. scale <= 0 means 1/sqrt(K). */
RetentionStatus retention_create(int32_t device, uint32_t ordinal, uint32_t heads,
                                 uint32_t head_offset, double scale, RetentionHandle **out);
RetentionStatus retention_destroy(RetentionHandle *h);
/* A CUstream of the handle's GPU (primary context) for its ops and for pools created later;
 * NULL: the device's default stream (CUDA's legacy default stream). Ops never synchronise,
 * except forwards needing scratch memory (final_state NULL, or varlen) on a caller stream, which
 * wait for it before freeing the scratch, and backwards asked for dlog_gamma (its partials are
 * summed on the host).
 * On the CPU and the emulator a non-NULL stream gives RETENTION_UNSUPPORTED. */
RetentionStatus retention_set_stream(RetentionHandle *h, void *stream);

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
/* chunk 0 runs the recurrent form. */
RetentionStatus retention_chunkwise_varlen_forward(
    const RetentionHandle *h, const RetentionTensor *q, const RetentionTensor *k,
    const RetentionTensor *v, const int64_t *cu_seqlens, uint32_t num_bounds,
    const RetentionTensor *initial_state, uint32_t chunk, const RetentionTensor *o,
    const RetentionTensor *final_state);
RetentionStatus retention_parallel_forward(const RetentionHandle *h, const RetentionTensor *q,
                                           const RetentionTensor *k, const RetentionTensor *v,
                                           const RetentionTensor *o);

/* Backward: d_final_state and initial_state may be NULL. Chunkwise and parallel on every device
 * (GPU kernels on the caller's memory and stream, no copy); varlen on CPU handles only. */
RetentionStatus retention_chunkwise_backward(const RetentionHandle *h, const RetentionTensor *q,
                                             const RetentionTensor *k, const RetentionTensor *v,
                                             const RetentionTensor *initial_state, uint32_t chunk,
                                             const RetentionTensor *d_o,
                                             const RetentionTensor *d_final_state,
                                             const RetentionGradients *grads);
RetentionStatus retention_chunkwise_varlen_backward(
    const RetentionHandle *h, const RetentionTensor *q, const RetentionTensor *k,
    const RetentionTensor *v, const int64_t *cu_seqlens, uint32_t num_bounds,
    const RetentionTensor *initial_state, uint32_t chunk, const RetentionTensor *d_o,
    const RetentionTensor *d_final_state, const RetentionGradients *grads);
RetentionStatus retention_parallel_backward(const RetentionHandle *h, const RetentionTensor *q,
                                            const RetentionTensor *k, const RetentionTensor *v,
                                            const RetentionTensor *d_o,
                                            const RetentionGradients *grads);

/* out = RMSNorm_head(o) * swish(g), all [B, T, H, V]; and its backward; every device. */
RetentionStatus retention_gated_epilogue_forward(const RetentionHandle *h, const RetentionTensor *o,
                                                 const RetentionTensor *g, double eps,
                                                 const RetentionTensor *out);
RetentionStatus retention_gated_epilogue_backward(const RetentionHandle *h,
                                                  const RetentionTensor *o,
                                                  const RetentionTensor *g, double eps,
                                                  const RetentionTensor *dy,
                                                  const RetentionTensor *d_o,
                                                  const RetentionTensor *dg);

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
/* One slot's state, host [layers, H, K, V] f32. */
RetentionStatus retention_state_pool_snapshot(RetentionStatePool *p, uint64_t slot,
                                              const RetentionTensor *out);
RetentionStatus retention_state_pool_restore(RetentionStatePool *p, uint64_t slot,
                                             const RetentionTensor *state);

#ifdef __cplusplus
}
#endif

#endif /* RETENTION_H */
