//! `retention-runtime`: devices (CUDA through `cudarc`, CPU, and the PTX emulator), streams,
//! the memory pool, the per-sequence recurrent-state pool, the module cache and the autotune
//! cache.
//!
//! This crate must not know how a kernel is written: it receives PTX images and CPU functions
//! from `retention-kernels` and launches them.
//!
//! Status: the runtime is built by its own issue; this crate currently only re-exports the
//! shared vocabulary so that the workspace layout of DESIGN §2 is in place.

pub use retention_core::{Dtype, Gammas, HostTensor, RetentionError, RetentionShape};
