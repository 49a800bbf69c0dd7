//! Running catalog kernels in the PTX emulator against the f64 reference, for `verify` (is
//! every kernel right?) and `autotune --device emulated` (which variant is predicted fastest?).

pub mod chunkwise;
pub mod decode;
pub mod io;

pub use io::EmuCheck;
