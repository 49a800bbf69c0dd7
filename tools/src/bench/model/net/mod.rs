//! A whole decoder model with seeded random weights, one decode step (and a prefill) at a
//! time: RetNet (gated multi-scale retention, its state in the runtime's `StatePool`) and the
//! Transformer of the same width, depth and parameter count (multi-head attention over a KV
//! cache, `retention_kernels::cpu::attention_decode`).
//!
//! Per layer, both architectures (x the residual stream `[B, d]`):
//!
//! ```text
//! RetNet:       x += W_O · (RMSNorm_head(retention(q, k, v)) ⊙ swish(g)),  [q k v g] = RMSNorm(x) · W_QKVG
//! Transformer:  x += W_O · attention(q, K-cache, V-cache),                  [q k v]   = RMSNorm(x) · W_QKV
//! both:         x += W_2 · gelu(RMSNorm(x) · W_1)
//! ```
//!
//! RetNet (the paper's configurations): q, k `d`, v, g `2d`, FFN `2d`: 12d² weights a layer.
//! Transformer: q, k, v, o `d`, FFN `4d`: 12d² a layer, the same count. Rotation (xPos, RoPE),
//! the embedding and the LM head are left out of both: the same work for both models.
//!
//! Every buffer a model owns is allocated through a [`ledger::Ledger`] that counts the bytes
//! the allocator actually handed out (weights, KV cache, activations) against a memory limit;
//! RetNet's state lives in the runtime's `MemoryPool`, whose high-water mark is its figure.
//! So memory is measured, never computed from a formula.
//!
//! This module knows nothing of the command line: tests include it as is.

pub mod config;
pub mod device;
pub mod error;
pub mod fill;
pub mod layers;
pub mod ledger;
pub mod matmul;
pub mod retnet;
pub mod transformer;
pub mod weights;

pub use config::{Arch, NetConfig};
pub use device::DeviceNet;
pub use error::ModelError;
pub use ledger::{Kind, Ledger};
pub use retnet::RetNet;
pub use transformer::Transformer;

use half::f16;
use retention_kernels::cpu::CpuElement;

/// Element type of weights, activations and the KV cache: f32, or f16 (the 16-bit type the
/// `gemm` crate multiplies; it accumulates in f32).
pub trait NetElement: CpuElement {
    /// `f32` or `f16`.
    const NAME: &'static str;
}

impl NetElement for f32 {
    const NAME: &'static str = "f32";
}

impl NetElement for f16 {
    const NAME: &'static str = "f16";
}
