//! `kernel-gen`: the retention kernel DSL (a typed builder in plain Rust), its legalise pass
//! and PTX emitter, the retention kernel generators, `KernelSpec`, and the catalog writer.
//! The PTX emulator lives in its own crate and is re-exported here as [`emu`], so that it can
//! judge the emitter's output without sharing its assumptions.
//!
//! This crate must not know about devices, streams, memory pools or `cudarc`: it turns a
//! `KernelSpec` into PTX text and nothing more.

pub use ptx_emu as emu;
