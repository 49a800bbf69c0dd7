//! `retention-check`: catalog kernels run on the PTX emulator (or a GPU, through the
//! runtime's launch targets) and held to the f64 reference — the one implementation of the
//! check, used by the workspace's tests, by `retention verify` (is every kernel right?) and
//! by `retention autotune --device emulated` (which variant is predicted fastest?).
//! Tolerances as ARCHITECTURE §4: f32 ≤ 1e-5 max relative, f16/bf16 ≤ 5e-3 relative RMSE,
//! states ≤ 1e-5, no read of unwritten shared memory on 16-bit kernels.
//!
//! It sits above the runtime and must not be imported by production code (the runtime, the
//! facade's ops): checkers judge kernels, they never serve them.

pub mod attention;
pub mod chunkwise;
pub mod chunkwise_backward;
pub mod decode;
pub mod epilogue;
pub mod io;
pub mod parallel;
pub mod parallel_backward;
pub mod two_phase;
pub mod varlen;

pub use io::EmuCheck;
