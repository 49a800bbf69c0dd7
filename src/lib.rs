//! `retention`: Retentive Network (RetNet) retention for Rust, on NVIDIA GPUs and the CPU.
//!
//! This is the facade users depend on. [`Retention`] runs the three forms of retention —
//! parallel, recurrent and chunkwise — on a [`Device`]; [`StatePool`] keeps the recurrent
//! state of every sequence being served (the RetNet counterpart of a KV cache) and decodes
//! batches whose rows belong to arbitrary sequences. [`reference`](mod@reference) is the f64 oracle every
//! implementation is checked against.
//!
//! The device API keeps data where a model keeps it: [`DeviceTensor`]s (owned, or borrowed
//! from a framework's buffer), ops that write caller-provided outputs on a caller's
//! [`Stream`] (`Retention::parallel_into`, `chunkwise_into`, `recurrent_into`,
//! `chunkwise_varlen_into`, `recurrent_varlen_into`; `StatePool::stage` + `step_into`), and
//! [`Graph`]s that capture a whole decode step. The host-tensor methods upload, run and
//! download.
//!
//! Training (on every device for the dense chunkwise and parallel forms and the epilogue;
//! other forms answer `RetentionError::Unsupported` on GPU-like devices):
//! `Retention::chunkwise_backward`, `parallel_backward`, `recurrent_backward`,
//! `chunkwise_varlen_backward`, `recurrent_varlen_backward` return [`Gradients`] (dq, dk, dv,
//! dH0 and d log γ per head); `chunkwise_for_training` returns a [`TrainingForward`] (o, H_T
//! and the f32 chunk states) that `chunkwise_backward_saved` consumes; `msr_epilogue_backward`
//! returns [`EpilogueGradients`]; `chunkwise_backward_into` and `parallel_backward_into` are
//! the device-tensor forms (writing a [`GradientsInto`] whose dH0 and d log γ are optional).
//!
//! ```
//! use retention::{Device, Gammas, HostTensor, Retention, RetentionParams, reference};
//! # fn main() -> retention::Result<()> {
//! let (b, t, h, k, v) = (1, 6, 2, 4, 3);
//! let ramp = |n: usize| (0..n).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect::<Vec<_>>();
//! let q = HostTensor::new(vec![b, t, h, k], ramp(b * t * h * k))?;
//! let kk = HostTensor::new(vec![b, t, h, k], ramp(b * t * h * k))?;
//! let vv = HostTensor::new(vec![b, t, h, v], ramp(b * t * h * v))?;
//! let params = RetentionParams::new(Gammas::retnet(h)?, None);
//!
//! let ret = Retention::new(&Device::best(), params.clone())?;
//! let (o, state) = ret.chunkwise(&q, &kk, &vv, 4, None)?;
//!
//! // The f64 oracle agrees.
//! let o_ref = reference::parallel(&q.to_f64(), &kk.to_f64(), &vv.to_f64(), &params)?;
//! assert!(reference::max_rel_diff(o.to_f64().data(), o_ref.data()) < 1e-5);
//! assert_eq!(state.shape(), &[b, h, k, v]);
//! # Ok(())
//! # }
//! ```
//!
//! Layouts are token-major: q, k `[B, T, H, K]`; v, o `[B, T, H, V]`; states `[B, H, K, V]`
//! in f32. This crate must not know about kernel internals: it only wires the crates below it
//! together.

pub use retention_core::{
    CuSeqlens, Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape,
    default_scale,
};
pub use retention_kernels::cpu::CpuElement;
pub use retention_kernels::reference;
pub use retention_kernels::reference::RetentionParams;
pub use retention_runtime::{
    Device, DeviceDtype, DeviceTensor, EpilogueGradients, GPU_ALIGN, Gradients, GradientsInto,
    Graph, HostState, MemoryPool, OutState, PoolStats, Qkv, Retention, Slot, StateConfig,
    StatePool, Stream, TrainingForward, TransferStats, Upstream,
};
