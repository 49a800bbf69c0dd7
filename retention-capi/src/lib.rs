//! `retention-capi`: the C ABI of the `retention` facade (header: `include/retention.h`;
//! ARCHITECTURE §8).
//!
//! Every exported function returns a [`RetentionStatus`] code; on failure a message is kept
//! per thread and read with [`retention_last_error`]. No panic crosses the boundary: each
//! entry runs inside `catch_unwind`. Handles are opaque, created and destroyed here, and carry
//! a magic tag so a foreign pointer or a double free is reported as
//! [`RetentionStatus::InvalidHandle`] where the memory is still readable.
//!
//! Tensors are described by [`RetentionTensor`] (pointer, dtype f32/f16/bf16, shape, strides)
//! in the token-major layouts of ARCHITECTURE §1, dense row-major only. The forwards, the dense
//! chunkwise and parallel backwards, the epilogue and its backward, and the decode step run on
//! the caller's memory of the handle's device (host pointers on the CPU and the emulator,
//! `CUdeviceptr`s on CUDA, on the caller's stream or the default one); the varlen backward runs
//! on the CPU only (the runtime's varlen backward takes host tensors) and says so with
//! [`RetentionStatus::Unsupported`] elsewhere, as does the runtime for an op its device has no
//! kernel for.
//!
//! This crate uses only the public facade; it must not know about kernels or the runtime's
//! internals.

mod backward;
mod epilogue;
mod forward;
mod handle;
mod pool;
mod status;
mod tensor;

pub use backward::{
    RetentionGradients, retention_chunkwise_backward, retention_chunkwise_varlen_backward,
    retention_parallel_backward,
};
pub use epilogue::{retention_gated_epilogue_backward, retention_gated_epilogue_forward};
pub use forward::{
    retention_chunkwise_forward, retention_chunkwise_varlen_forward, retention_parallel_forward,
    retention_recurrent_forward,
};
pub use handle::{
    RetentionDeviceKind, RetentionHandle, retention_create, retention_destroy, retention_set_stream,
};
pub use pool::{
    RetentionStatePool, retention_state_pool_alloc, retention_state_pool_create,
    retention_state_pool_destroy, retention_state_pool_free, retention_state_pool_restore,
    retention_state_pool_snapshot, retention_state_pool_step,
};
pub use status::{RetentionStatus, retention_last_error};
pub use tensor::{RetentionDtype, RetentionTensor};
