//! The `layer_ops` family (ARCHITECTURE §3): the element-wise parts of a decoder layer around
//! retention and attention, so a whole model step stays on the device:
//!
//! ```text
//! rms_norm:  y[r] = x[r] · (mean(x[r]²) + eps)^(−1/2) ⊙ gain        per row of width d
//! gelu:      x ← x · σ(2·√(2/π)·(x + 0.044715·x³))                   element-wise, in place
//! copy_rows: dst[r·ds + do + c] = src[r·ss + so + c]                 bit-exact row moves
//! ```
//!
//! (`x·σ(2u)` is the tanh form `x/2·(1 + tanh u)` exactly, and keeps its relative accuracy
//! where the tanh form cancels.) All math in f32 whatever the dtype; every input read once
//! per pass and every output written once.
//!
//! Mapping: `rms_norm` (`rms_norm.rs`) is one warp per row, 4 rows per 128-thread CTA, grid
//! `(⌈rows/4⌉, 1, 1)`, the width d baked in (`k` = `v` = d ≤ [`MAX_WIDTH`]); lanes stride the
//! row 4 (or 2) columns at a time, so loads are coalesced; the row is read twice (the sum of
//! squares, then the scaled store: the second read hits L1/L2). `gelu` (`gelu.rs`) is one
//! thread per 4 consecutive elements, 256 threads per CTA, grid `(⌈n/1024⌉, 1, 1)`; the spec's
//! `v` (4 or 1) says whether n is a multiple of 4 (one vector access) or not (guarded scalar
//! accesses). `copy_rows` (`copy_rows.rs`) is one thread per copied element, 256 per CTA
//! (the spec's `v` is 1). None takes a chunk or decays (runtime γ).

mod copy_rows;
mod gelu;
mod rms_norm;

use crate::dsl::{KernelBuilder, ParamRef, Ty};
use crate::error::{check_span, unsupported};
use crate::math::kernel_head::start_kernel;
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{KernelOp, KernelSpec};
use crate::{GenError, GenResult, LaunchGeometry};

/// Widest row `rms_norm` serves (the paper's 6.7B model has d = 4096).
pub const MAX_WIDTH: u32 = 8192;

/// Elements one `gelu` thread serves.
pub const GELU_PER_THREAD: u32 = 4;

/// Check that this family serves `spec`, before a single instruction is emitted.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the first field it does not serve.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    match spec.op {
        KernelOp::RmsNorm => check_span(
            "width d",
            spec.v,
            MAX_WIDTH,
            format!("rms_norm serves d in 1..={MAX_WIDTH}"),
        )?,
        KernelOp::CopyRows if spec.v != 1 => {
            return Err(unsupported("v", spec.v, "copy_rows takes v = 1"));
        }
        KernelOp::Gelu if !matches!(spec.v, 1 | 4) => {
            return Err(unsupported(
                "alignment v",
                spec.v,
                "gelu takes 4 (length a multiple of 4) or 1",
            ));
        }
        KernelOp::Gelu | KernelOp::CopyRows => {}
        other => {
            return Err(unsupported(
                "op",
                other.name(),
                "the layer_ops family emits rms_norm, gelu and copy_rows only",
            ));
        }
    }
    if spec.k != spec.v {
        return Err(unsupported("head dim K", spec.k, "K must equal v"));
    }
    spec.check_no_chunk_no_decays("a layer op")?;
    spec.check_warp_rows()
}

/// Rows (warps) one `rms_norm` CTA serves.
pub fn rows_per_cta(spec: &KernelSpec) -> u32 {
    spec.tile.threads / 32
}

/// The launch over `rows` rows (`rms_norm`) or `rows` elements (`gelu`, `copy_rows`);
/// `heads` must be 1.
///
/// # Errors
/// As [`validate`]; [`GenError::Launch`] for zero sizes or `heads` ≠ 1.
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    if rows == 0 || heads != 1 {
        return Err(GenError::Launch(format!(
            "layer ops launch over rows {rows} >= 1 and heads 1 (got {heads})"
        )));
    }
    let per_cta = match spec.op {
        KernelOp::Gelu => spec.tile.threads * GELU_PER_THREAD,
        KernelOp::CopyRows => spec.tile.threads,
        _ => rows_per_cta(spec),
    };
    Ok(LaunchGeometry {
        grid: [rows.div_ceil(per_cta), 1, 1],
        block: [spec.tile.threads, 1, 1],
        dynamic_smem_bytes: 0,
    })
}

/// Parameter names in launch order.
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    match spec.op {
        KernelOp::Gelu => GELU_PARAMS.to_vec(),
        KernelOp::CopyRows => COPY_ROWS_PARAMS.to_vec(),
        _ => RMS_NORM_PARAMS.to_vec(),
    }
}

/// A layer-op kernel for `spec` (CTAs of `spec.tile.threads`) with its headers (`title`,
/// `formula`) and `names` declared in launch order, `.u64` unless `scalars` types them.
fn open_kernel<const N: usize>(
    spec: &KernelSpec,
    (title, formula): (&str, &str),
    names: [&str; N],
    scalars: &[(&str, Ty)],
) -> (KernelBuilder, [ParamRef; N]) {
    let mut kb = start_kernel(spec, title, formula, (spec.tile.threads, false));
    let params = kb.params(names, scalars);
    (kb, params)
}

/// gelu's parameters, in launch order (`p_n` `.u32`, `p_x` `.u64`).
pub const GELU_PARAMS: [&str; 2] = ["p_x", "p_n"];

/// copy_rows' parameters, in launch order (the two pointers `.u64`, the rest `.u32`).
pub const COPY_ROWS_PARAMS: [&str; 8] = [
    "p_src",
    "p_dst",
    "p_n",
    "p_width",
    "p_src_stride",
    "p_src_offset",
    "p_dst_stride",
    "p_dst_offset",
];

/// rms_norm's parameters, in launch order (`p_rows` `.u32`, `p_eps` `.f32`, the tensors
/// `.u64`).
pub const RMS_NORM_PARAMS: [&str; 5] = ["p_x", "p_gain", "p_y", "p_rows", "p_eps"];

/// The plan of a launch over `size.rows` rows (or elements for `gelu`): vector path, no
/// workspace.
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    Ok(KernelPlan::new(
        spec,
        KernelPath::Vector,
        spec.v,
        launch_geometry(spec, size.rows, size.heads.max(1))?,
        param_names(spec),
    ))
}

/// The kernel of `spec` (validated first).
///
/// # Errors
/// As [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    match spec.op {
        KernelOp::Gelu => gelu::generate(spec),
        KernelOp::CopyRows => copy_rows::generate(spec),
        _ => rms_norm::generate(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arch;
    use retention_core::Dtype;

    #[test]
    fn specs_outside_the_family_are_typed_errors() {
        let ok = KernelSpec::rms_norm(4096, Dtype::F16, Arch::Sm90);
        assert!(validate(&ok).is_ok());
        for bad in [
            KernelSpec::rms_norm(0, Dtype::F32, Arch::Sm80),
            KernelSpec::rms_norm(MAX_WIDTH + 1, Dtype::F32, Arch::Sm80),
            KernelSpec::gelu(3, Dtype::F32, Arch::Sm80),
            KernelSpec {
                v: 4,
                k: 4,
                ..KernelSpec::copy_rows(Dtype::F32, Arch::Sm80)
            },
            KernelSpec::epilogue(64, Dtype::F32, Arch::Sm80),
        ] {
            assert!(
                matches!(validate(&bad), Err(GenError::UnsupportedSpec { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            launch_geometry(&ok, 10, 2),
            Err(GenError::Launch(_))
        ));
    }

    #[test]
    fn launches_cover_every_row_and_element() {
        let norm = KernelSpec::rms_norm(300, Dtype::F32, Arch::Sm80);
        assert_eq!(launch_geometry(&norm, 9, 1).unwrap().grid, [3, 1, 1]); // 4 rows a CTA
        let gelu = KernelSpec::gelu(4, Dtype::Bf16, Arch::Sm80);
        assert_eq!(launch_geometry(&gelu, 1025, 1).unwrap().grid, [2, 1, 1]); // 1024 a CTA
        let copy = KernelSpec::copy_rows(Dtype::F16, Arch::Sm90);
        assert_eq!(launch_geometry(&copy, 257, 1).unwrap().grid, [2, 1, 1]); // 256 a CTA
    }
}
