//! `retention`: Retentive Network (RetNet) retention for Rust, on NVIDIA GPUs and the CPU.
//!
//! This is the facade users depend on. It re-exports the shared vocabulary
//! ([`Gammas`], [`Dtype`], [`RetentionShape`], [`HostTensor`], [`RetentionError`]) and the f64
//! reference implementation of every retention form ([`reference`]).
//!
//! ```
//! use retention::{reference, Gammas, HostTensor, RetentionParams};
//! # fn main() -> retention::Result<()> {
//! let (b, t, h, k, v) = (1, 4, 2, 3, 5);
//! let q = HostTensor::<f64>::new(vec![b, t, h, k], vec![0.1; b * t * h * k])?;
//! let kk = q.clone();
//! let vv = HostTensor::<f64>::new(vec![b, t, h, v], vec![0.2; b * t * h * v])?;
//! let params = RetentionParams::new(Gammas::retnet(h)?, None);
//! let o_par = reference::parallel(&q, &kk, &vv, &params)?;
//! let (o_chunk, _state) = reference::chunkwise(&q, &kk, &vv, &params, 2, None)?;
//! assert!(reference::max_abs_diff(o_par.data(), o_chunk.data()) < 1e-12);
//! # Ok(())
//! # }
//! ```
//!
//! It must not know about kernel internals: it only wires the crates below it together.

pub use retention_core::{
    CuSeqlens, Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape,
    default_scale,
};
pub use retention_kernels::reference;
pub use retention_kernels::reference::RetentionParams;
