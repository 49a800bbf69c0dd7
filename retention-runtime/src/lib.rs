//! `retention-runtime`: devices, the memory pool, the per-sequence recurrent-state pool, and
//! (as their issues land) streams, the module cache and the autotune cache.
//!
//! This crate must not know how a kernel is written: it receives PTX images and CPU functions
//! from `retention-kernels` and launches them.
//!
//! Status: `Device::Cpu`, [`MemoryPool`] and [`StatePool`] exist; the CPU device currently
//! computes through the f64 reference (rounded to f32 state), until the fast CPU kernels are
//! wired in. CUDA and emulated devices, streams and the module cache come with the runtime
//! issue.

pub mod cuda;
mod device;
mod memory_pool;
mod slot;
mod state_pool;

pub use device::Device;
pub use memory_pool::{MemoryPool, PoolBuffer, PoolStats, size_class};
pub use slot::Slot;
pub use state_pool::{HostState, StateConfig, StatePool};
