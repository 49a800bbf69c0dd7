//! Running catalog kernels in the PTX emulator against the f64 reference: one implementation
//! of the check, used by the workspace's tests (`tests/decode_emulated.rs`), by
//! `retention verify` (is every kernel right?) and by `retention autotune --device emulated`
//! (which variant is predicted fastest?).

pub mod attention;
pub mod chunkwise;
pub mod decode;
pub mod io;
pub mod parallel;
pub mod two_phase;
pub mod varlen;

pub use io::EmuCheck;
