//! `retention-kernels`: every retention op three ways — the f64 [`reference`](mod@reference) (the oracle all
//! other implementations are checked against), the fast CPU kernels, and the GPU images
//! (PTX from `kernel-gen`).
//!
//! This crate must not know about streams, memory pools, state pools or devices: its functions
//! take host tensors (or raw buffers) and compute.

pub mod cpu;
pub mod reference;
mod validate;
