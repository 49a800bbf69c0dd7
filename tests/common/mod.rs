//! Helpers shared by the emulator-vs-reference tests of the chunkwise kernels: moving f64
//! test data into emulator buffers of a dtype and back, and the decays each gamma set uses.

#![allow(dead_code)]

use half::{bf16, f16};
use kernel_gen::GammaSet;
use kernel_gen::emu::{Buffer, Dtype as EmuDtype};
use retention_core::{Dtype, Element, Gammas};

/// An input buffer of `dtype` holding `values` (rounded once from f64).
pub fn input_buffer(dtype: Dtype, values: &[f64]) -> Buffer {
    match dtype {
        Dtype::F32 => Buffer::from_f32(&values.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        Dtype::F16 => Buffer::from_f16(
            &values
                .iter()
                .map(|&x| <f16 as Element>::from_f64(x))
                .collect::<Vec<_>>(),
        ),
        Dtype::Bf16 => Buffer::from_bf16(
            &values
                .iter()
                .map(|&x| <bf16 as Element>::from_f64(x))
                .collect::<Vec<_>>(),
        ),
    }
}

/// The values of a buffer of `dtype`, widened to f64.
pub fn output_values(dtype: Dtype, buf: &Buffer) -> Vec<f64> {
    match dtype {
        Dtype::F32 => buf.to_f32().into_iter().map(f64::from).collect(),
        Dtype::F16 => buf
            .to_u16()
            .into_iter()
            .map(|b| f16::from_bits(b).to_f64())
            .collect(),
        Dtype::Bf16 => buf
            .to_u16()
            .into_iter()
            .map(|b| bf16::from_bits(b).to_f64())
            .collect(),
    }
}

/// The emulator's name for `dtype`.
pub fn emu_dtype(dtype: Dtype) -> EmuDtype {
    match dtype {
        Dtype::F32 => EmuDtype::F32,
        Dtype::F16 => EmuDtype::F16,
        Dtype::Bf16 => EmuDtype::Bf16,
    }
}

/// The decays a launch of `set` with `heads` heads uses: the named set, or for runtime γ a
/// fast head, a middling one and one so slow that γ rounds to 1 in f32 (only log2 γ carries
/// it), cycled.
pub fn gammas_for(set: GammaSet, heads: usize) -> Gammas {
    match set {
        GammaSet::Retnet { heads } => Gammas::retnet(heads as usize).unwrap(),
        GammaSet::Runtime => {
            let pool = [0.3, 1.0 - 2f64.powi(-30), 0.97];
            Gammas::from_list((0..heads).map(|h| pool[h % pool.len()]).collect()).unwrap()
        }
    }
}

/// log2 γ_h of `gammas` as the f32 buffer a runtime-γ kernel reads.
pub fn log2_gamma_buffer(gammas: &Gammas) -> Buffer {
    Buffer::from_f32(
        &(0..gammas.len())
            .map(|h| gammas.log2(h) as f32)
            .collect::<Vec<_>>(),
    )
}
