//! `ptx-emu`: executes PTX text on the CPU, thread by thread, warp by warp, so that every GPU
//! kernel is proven against the f64 reference on machines without a GPU (ARCHITECTURE §4.2).
//! Re-exported as `kernel_gen::emu`.
//!
//! This crate must not know how kernels are written (the DSL, `KernelSpec`) nor about devices
//! or streams: it parses the PTX it is given and runs it exactly as the PTX ISA specifies.
//!
//! # Model
//! - **Parsing** ([`Module::parse`]): the PTX subset compilers and kernel generators emit
//!   (see the `parse` module docs). Every instruction is decoded up front into a compact
//!   form with register indices; an unsupported instruction or modifier is an
//!   [`EmuError::Unsupported`] naming it and its line, never a silent no-op.
//! - **Execution** ([`Module::launch`]): blocks run in parallel (rayon); a block's warps run
//!   32 lanes in lockstep with per-lane PCs and min-PC reconvergence; `bar.sync` waits for
//!   the block's threads; `shfl.sync`, `mma.sync.aligned.m16n8k16` and `ldmatrix` use the
//!   ISA's fragment layouts; `cp.async` copies land at `wait_group`/`wait_all`.
//! - **Checks**: global accesses outside every buffer, shared accesses outside the declared
//!   static + dynamic size, misaligned accesses, stores into buffers not marked output,
//!   `ld.global.nc` reads of a buffer the launch also writes,
//!   shared-memory races between barriers, collectives reached by a divergent warp, and
//!   barriers some thread can never reach are all typed [`EmuError`]s naming kernel,
//!   instruction, line, block and thread.
//! - **Cost** ([`EmuReport`]): instruction mix, global bytes and 32-byte sectors per request,
//!   shared bank conflicts, barriers, and a roofline time *prediction* for A100 and H100;
//!   [`EmuReport::predict`] gives the [`time_model`]'s *prediction* for an A100, H100 or H200
//!   (launch overhead, occupancy, waves, issue and tensor rates, exposed latency);
//!   also reads of shared bytes no thread of the block had written (`shared_uninit_reads`:
//!   counted, not an error, since a kernel may read stale bytes it then masks; the catalog
//!   checks hold tensor-core kernels to zero).
//! - **Numerics**: f32 arithmetic is IEEE with the instruction's rounding mode; f16/bf16
//!   conversions honour `.rn/.rz/.rm/.rp`; `.approx` functions (`ex2`, `lg2`, `rcp`,
//!   `rsqrt`, `sqrt`, `sin`, `cos`, `tanh`) are computed in f64 and rounded once, i.e. more
//!   accurately than hardware; `mma` sums exact products in f64 and rounds once to f32.
//!
//! # Limits (each is an error or documented imprecision, never a silent wrong answer)
//! - Not implemented (decode error): `.func`/`call`, `.global`/`.const` variables, `ld.const`,
//!   texture/surface ops, `prmt` modes other than the default, `sad`, `bar.arrive`,
//!   `bar.warp.sync`,
//!   shared-memory atomics, `wgmma`/`tma`/clusters, `mma` shapes other than m16n8k16 with
//!   f16/bf16 inputs and f32 accumulators, `ldmatrix` shapes other than m8n8.b16.
//! - Race detection covers shared memory within a block (byte granularity, barrier epochs);
//!   a named barrier with a thread count that releases a subset of the block also advances
//!   the epoch for threads outside it, which can hide a race between those threads.
//!   Global memory races between blocks are not detected.
//! - Reconvergence is min-PC (see `exec::warp`): exact for structured control flow.
//! - `mma` rounds once from an f64 sum; hardware truncates partial sums differently, so
//!   compare tensor-core results with a tolerance.
//!
//! # Example
//! ```
//! use ptx_emu::{Buffer, Launch, Module, Param};
//!
//! let ptx = r#"
//! .version 8.0
//! .target sm_80
//! .address_size 64
//! .visible .entry scale(.param .u64 x, .param .u64 y, .param .f32 s, .param .u32 n)
//! {
//!     .reg .pred %p<2>;
//!     .reg .b32 %r<4>;
//!     .reg .f32 %f<4>;
//!     .reg .b64 %rd<6>;
//!     ld.param.u64 %rd1, [x];
//!     ld.param.u64 %rd2, [y];
//!     ld.param.f32 %f1, [s];
//!     ld.param.u32 %r1, [n];
//!     mov.u32 %r2, %tid.x;
//!     setp.ge.u32 %p1, %r2, %r1;
//!     @%p1 bra DONE;
//!     cvta.to.global.u64 %rd3, %rd1;
//!     cvta.to.global.u64 %rd4, %rd2;
//!     mul.wide.u32 %rd5, %r2, 4;
//!     add.s64 %rd3, %rd3, %rd5;
//!     add.s64 %rd4, %rd4, %rd5;
//!     ld.global.f32 %f2, [%rd3];
//!     mul.rn.f32 %f3, %f2, %f1;
//!     st.global.f32 [%rd4], %f3;
//! DONE:
//!     ret;
//! }
//! "#;
//! let module = Module::parse(ptx)?;
//! let mut launch = Launch::new("scale", [1, 1, 1], [32, 1, 1])
//!     .arg(Param::Buffer(Buffer::from_f32(&[1.0, 2.0, 3.0])))
//!     .arg(Param::Buffer(Buffer::zeros(ptx_emu::Dtype::F32, 3)))
//!     .arg(Param::F32(0.5))
//!     .arg(Param::U32(3));
//! let report = module.launch(&mut launch)?;
//! assert_eq!(launch.buffer(1).unwrap().to_f32(), vec![0.5, 1.0, 1.5]);
//! assert_eq!(report.global_bytes_read, 12);
//! assert!(report.predicted_a100_seconds > 0.0);
//! # Ok::<(), ptx_emu::EmuError>(())
//! ```

mod decode;
mod error;
mod exec;
mod launch;
mod launch_file;
pub mod memory_map;
mod parse;
mod report;
pub mod time_model;
mod types;

pub use error::{AccessKind, EmuError, Site};
pub use launch::{
    Buffer, DEFAULT_STEP_LIMIT, Dtype, EntryInfo, Launch, MAX_LOCAL_BYTES, MAX_SHARED_BYTES,
    MAX_THREADS_PER_BLOCK, Module, Param,
};
pub use launch_file::run_launch_files;
pub use report::{A100, EmuReport, GpuPeaks, H100, InstructionCounts};
pub use time_model::{
    A100_MODEL, Bound, GPU_MODELS, GpuModel, H100_MODEL, H200_MODEL, KernelResources, Prediction,
    Workload,
};
