//! `retention-candle`: retention as candle operations (ARCHITECTURE §8): [`chunkwise_retention`]
//! and [`parallel_retention`] map q, k `[B, T, H, K]` and v `[B, T, H, V]` candle tensors to o
//! `[B, T, H, V]` through candle `CustomOp3`s whose backward (candle's `bwd` hook) is the
//! library's, so `Var`s and `Tensor::backward` give dq, dk, dv.
//!
//! Storage: candle's CPU storage in f32, f16 or bf16 (the CPU kernels of the facade). candle's
//! CUDA storage is not served, and no `cuda` feature is offered: candle-core 0.11.1 (the
//! release on cudarc 0.19, as the runtime) asks cudarc for `dynamic-linking`, which cannot be
//! unified with the runtime's `dynamic-loading` (cudarc 0.19.10's build script refuses both at
//! once), and its candle-kernels dependency compiles `.cu` sources with nvcc at build time. A
//! CUDA tensor gets candle's typed error ("no cuda implementation for retention-chunkwise").
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::{Device as CandleDevice, Tensor, Var};
//! use retention::{Device, Gammas, Retention, RetentionParams};
//! use retention_candle::chunkwise_retention;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (b, t, h, k, v) = (1, 6, 2, 4, 3);
//! let params = RetentionParams::new(Gammas::retnet(h)?, None);
//! let ret = Arc::new(Retention::new(&Device::Cpu, params)?);
//! let dev = CandleDevice::Cpu;
//! let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, h, k), &dev)?)?;
//! let kk = Tensor::randn(0f32, 1.0, (b, t, h, k), &dev)?;
//! let vv = Tensor::randn(0f32, 1.0, (b, t, h, v), &dev)?;
//! let o = chunkwise_retention(q.as_tensor(), &kk, &vv, &ret, 4)?;
//! let grads = o.sum_all()?.backward()?;
//! assert_eq!(grads.get(q.as_tensor()).unwrap().dims(), &[b, t, h, k]);
//! # Ok(())
//! # }
//! ```
//!
//! This crate is a thin layer over the public facade `retention`: it must not know about
//! kernels or the runtime's internals, and it adds no math of its own.

mod ops;
mod storage;

pub use ops::{ChunkwiseRetention, ParallelRetention, chunkwise_retention, parallel_retention};
