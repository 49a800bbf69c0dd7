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
//! `Retention` and `StatePool` run on every device: the CPU kernels on `Device::Cpu`; on
//! `Device::Emulated` and `Device::Cuda` one launch description per kernel call
//! ([`launch_target`]), executed by the PTX emulator or by the GPU through the `cuda` backend
//! ([`cuda_target::CudaTarget`]). On CUDA the state pool lives in GPU memory.

pub mod autotune_cache;
mod capture;
pub mod catalog_check;
pub mod cuda;
pub mod cuda_target;
mod device;
mod device_launch;
mod gpu;
mod gpu_chunkwise;
mod gpu_decode;
mod gpu_parallel;
mod host_view;
mod kernel_launch;
pub mod kernel_timing;
pub mod launch_target;
mod memory_pool;
mod module_cache;
mod retention;
mod retention_device;
mod slot;
mod state_pool;
mod stream;
mod tensor;
mod transfer;

pub use capture::Graph;
pub use device::Device;
pub use memory_pool::{MemoryPool, PoolBuffer, PoolStats, size_class};
pub use module_cache::{LoadedModule, ModuleCache, ModuleCacheStats};
pub use retention::Retention;
pub use retention_device::{OutState, Qkv};
pub use slot::Slot;
pub use state_pool::{HostState, StateConfig, StatePool};
pub use stream::{Event, Stream};
pub use tensor::{DeviceDtype, DeviceTensor};
pub use transfer::TransferStats;
