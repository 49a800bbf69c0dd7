//! `ptx-emu`: executes PTX text on the CPU, thread by thread, warp by warp, so that every GPU
//! kernel is proven against the f64 reference on machines without a GPU (DESIGN §4.2).
//! Re-exported as `kernel_gen::emu`.
//!
//! This crate must not know how kernels are written (the DSL, `KernelSpec`) nor about devices
//! or streams: it parses the PTX it is given and runs it exactly as the PTX ISA specifies.
