//! Which decode variant serves a launch (ARCHITECTURE §3, `decode`): the value slice W —
//! the state columns one CTA streams — chosen from the batch, the heads and the SM count.
//!
//! A narrow slice splits a (row, head) over ⌈V/W⌉ CTAs so that a small batch still fills
//! the GPU (batch 1 of the 1.3b head: 8 heads × 16 slices of 32 columns = 128 CTAs on 132
//! SMs), at the price of short scattered pieces of every state row (128 bytes of each 2 KiB
//! row) and of q, k staged once per slice. Once the batch alone fills the GPU those costs
//! buy nothing: on an H100 the split kernel moved batch 64 at 88% of copy bandwidth where
//! one CTA per (row, head), streaming whole rows, reached 96–98%. So the plan takes the
//! widest slice (a power of two, up to all of V) that still launches at least two CTAs per
//! SM, and the narrowest (the spec's default) when even that does not.

use super::decode::{default_value_slice, slice_allowed, validate};
use crate::spec::{KernelOp, KernelSpec};

/// CTAs per SM a decode launch aims for (the attention baseline's plan aims for the same).
const CTAS_PER_SM: u64 = 2;

/// The decode spec to launch for `rows` rows of `heads` heads: `spec` with its value slice
/// (`chunk`) set to the widest power of two that still gives N·H·⌈V/W⌉ ≥ 2 × the arch's
/// SMs, or `spec` itself when its default slice is already that wide or wider, when it
/// names a slice, or when it is not a valid decode spec (its own validation reports that).
pub fn decode_variant(spec: &KernelSpec, rows: u32, heads: u32) -> KernelSpec {
    if spec.op != KernelOp::Decode || spec.chunk.is_some() || validate(spec).is_err() {
        return *spec;
    }
    let cells = u64::from(rows) * u64::from(heads);
    let target = CTAS_PER_SM * u64::from(spec.arch.sm_count());
    let narrow = default_value_slice(spec);
    let mut best = narrow;
    let mut w = narrow * 2;
    while slice_allowed(spec, w) && cells * u64::from(spec.v.div_ceil(w)) >= target {
        best = w;
        w *= 2;
    }
    if best == narrow {
        *spec
    } else {
        KernelSpec {
            chunk: Some(best),
            ..*spec
        }
    }
}

/// The value slices wider than `spec`'s default that [`decode_variant`] may pick (the
/// catalog lists a variant for each).
pub fn wider_slices(spec: &KernelSpec) -> Vec<u32> {
    let mut out = Vec::new();
    let mut w = default_value_slice(spec) * 2;
    while slice_allowed(spec, w) {
        out.push(w);
        w *= 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, GammaSet};
    use retention_core::Dtype;

    fn paper(arch: Arch) -> KernelSpec {
        KernelSpec::decode(256, 512, GammaSet::Retnet { heads: 8 }, Dtype::Bf16, arch)
    }

    #[test]
    fn the_slice_widens_with_the_batch() {
        // 8 heads on an H100 (132 SMs, target 264 CTAs): W = 32 (16 slices) up to batch 4,
        // then wider until one CTA per (row, head) from batch 33.
        let spec = paper(Arch::Sm90);
        let w = |rows| decode_variant(&spec, rows, 8).chunk;
        assert_eq!(w(1), None);
        assert_eq!(w(4), None);
        assert_eq!(w(8), Some(64));
        assert_eq!(w(16), Some(128));
        assert_eq!(w(32), Some(256));
        assert_eq!(w(33), Some(512));
        assert_eq!(w(64), Some(512));
        assert_eq!(wider_slices(&spec), vec![64, 128, 256, 512]);
    }

    #[test]
    fn named_and_narrow_specs_are_kept() {
        let named = KernelSpec {
            chunk: Some(128),
            ..paper(Arch::Sm80)
        };
        assert_eq!(decode_variant(&named, 64, 8), named);
        // K = V = 64: the default slice is all of V already.
        let small = KernelSpec::decode(64, 64, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
        assert_eq!(decode_variant(&small, 64, 8), small);
        assert!(wider_slices(&small).is_empty());
    }
}
