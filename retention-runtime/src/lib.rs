//! `retention-runtime`: devices ([`Device`]: CPU, CUDA through `cudarc`, and the PTX
//! emulator), the caching [`MemoryPool`], the per-sequence recurrent-state pool
//! ([`StatePool`]) and the [`ModuleCache`] (spec → PTX from `kernel-gen` → loaded module).
//!
//! This crate must not know how a kernel is written: it asks `kernel-gen` for the PTX of a
//! `KernelSpec` (and its launch geometry and parameter order) and `retention-kernels` for CPU
//! functions, and launches them.
//!
//! Also: [`Stream`]/[`Event`] with one API on every device, the autotune cache
//! ([`autotune_cache`]) whose winners [`Retention::tuned_chunk`] uses, and the emulator-vs-
//! reference check of catalog kernels ([`catalog_check`]).
//!
//! Status: `Retention` and `StatePool` run on the CPU and on `Device::Emulated` (decode and
//! chunkwise launch the catalog's PTX); on `Device::Cuda` they are a typed error until the
//! CUDA launch path is wired to them (the `cuda` backend itself loads PTX and launches).

pub mod autotune_cache;
pub mod catalog_check;
pub mod cuda;
mod device;
mod emulated_chunkwise;
mod emulated_decode;
mod memory_pool;
mod module_cache;
mod retention;
mod slot;
mod state_pool;
mod stream;

pub use device::Device;
pub use memory_pool::{MemoryPool, PoolBuffer, PoolStats, size_class};
pub use module_cache::{LoadedModule, ModuleCache, ModuleCacheStats};
pub use retention::Retention;
pub use slot::Slot;
pub use state_pool::{HostState, StateConfig, StatePool};
pub use stream::{Event, Stream};
