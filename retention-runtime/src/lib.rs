//! `retention-runtime`: devices, device memory and the device-resident execution of
//! retention.
//!
//! What it owns: [`Device`] (CPU, CUDA through `cudarc` with the driver loaded at run time,
//! and the PTX emulator standing in for a GPU); [`DeviceTensor`] (a tensor in a device's
//! memory, owned from the caching [`MemoryPool`] or borrowed from a framework's buffer);
//! [`Stream`] (one API on every device, counting host↔device bytes in [`TransferStats`]) and
//! [`Graph`] (a stream's work captured and replayed: a CUDA graph, or on the emulator the
//! recorded launch list); [`Retention`] (with its training API on host tensors: the backward of every form and
//! of the MSR epilogue, [`Gradients`], [`TrainingForward`]) and [`StatePool`], whose device API runs every op on
//! device tensors, writing caller-provided outputs on the caller's stream with no hidden
//! synchronisation or host copy (the host-tensor methods upload, run and download); the
//! [`ModuleCache`] (spec → PTX from `kernel-gen` → loaded module); and the autotune cache
//! ([`autotune_cache`]) whose winners [`Retention::tuned_chunk`] uses; and [`Blas`], cuBLAS
//! GEMMs on device tensors for the model code around retention.
//!
//! One launch description (`kernel_launch`: a kernel spec, its geometry and arguments bound
//! by parameter name — device addresses and scalars, never host data) has two executors: the
//! PTX emulator, which stages the addressed bytes of emulator memory into its own address
//! map, and cudarc, which passes the addresses to the GPU as they are. On `Device::Cpu` the
//! fast CPU kernels of `retention-kernels` run instead.
//!
//! What it must not know: how a kernel is written. It asks `kernel-gen` for a spec's plan
//! (`kernel_gen::plan`: path, value slice, geometry, parameter names) and PTX, and
//! `retention-kernels` for CPU functions; it never imports a kernel family. Nor does it hold
//! the emulator-vs-reference checkers: those live in `retention-check`, above it. Kernel
//! timing ([`kernel_timing`], host-buffer launches for `retention bench`/`autotune`) lives
//! here, but no op depends on it.

mod attention_device;
pub mod autotune_cache;
mod blas;
mod blas_host;
mod capture;
pub mod cuda;
pub mod cuda_target;
mod device;
mod device_launch;
mod epilogue_device;
mod gpu;
mod gpu_backward;
mod gpu_chunkwise;
mod gpu_decode;
mod gpu_parallel;
mod gpu_parallel_backward;
mod gpu_training_forward;
mod host_view;
mod kernel_launch;
pub mod kernel_timing;
pub mod launch_target;
mod layer_ops_device;
mod memory_pool;
mod module_cache;
mod retention;
mod retention_device;
mod retention_training;
mod slot;
mod state_pool;
mod stream;
mod tensor;
mod training_device;
mod training_parallel;
mod transfer;

pub use attention_device::RowCopy;
pub use blas::{Blas, GemmWrite};
pub use capture::Graph;
pub use device::Device;
pub use epilogue_device::EpilogueGradientsInto;
pub use memory_pool::{MemoryPool, PoolBuffer, PoolStats, size_class};
pub use module_cache::{LoadedModule, ModuleCache, ModuleCacheStats};
pub use retention::Retention;
pub use retention_device::{OutState, Qkv};
pub use retention_training::{EpilogueGradients, Gradients, TrainingForward};
pub use slot::Slot;
pub use state_pool::{HostState, StateConfig, StatePool};
pub use stream::{Event, Stream};
pub use tensor::{DeviceDtype, DeviceTensor, GPU_ALIGN};
pub use training_device::{GradientsInto, Upstream};
pub use transfer::TransferStats;
