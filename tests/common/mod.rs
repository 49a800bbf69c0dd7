//! Helpers shared by the emulator-vs-reference tests of the chunkwise kernels. Buffer
//! conversions and the test decays are the runtime's catalog check's own
//! (`retention_check::io`), so the tests, `retention verify` and
//! `retention autotune` feed kernels identically.

#![allow(dead_code)]

use kernel_gen::GammaSet;
use kernel_gen::emu::Buffer;
use retention_core::Gammas;

pub use retention_check::io::{emu_dtype, input_buffer, output_values};

/// The decays a launch of `set` with `heads` heads uses: the named set, or for runtime γ a
/// fast head, one so slow that γ rounds to 1 in f32 (only log2 γ carries it), and a middling
/// one, cycled.
pub fn gammas_for(set: GammaSet, heads: usize) -> Gammas {
    retention_check::io::gammas_for(set, heads).unwrap()
}

/// log2 γ_h of `gammas` as the f32 buffer a runtime-γ kernel reads.
pub fn log2_gamma_buffer(gammas: &Gammas) -> Buffer {
    Buffer::from_f32(
        &(0..gammas.len())
            .map(|h| gammas.log2(h) as f32)
            .collect::<Vec<_>>(),
    )
}
