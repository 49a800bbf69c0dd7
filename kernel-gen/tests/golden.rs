//! Golden PTX snapshots: every codegen change shows up as a diff in review.
//!
//! After an intended change, regenerate and review the diff:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p kernel-gen --test golden
//! ```

use std::path::PathBuf;

use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, emit_ptx};
use retention_core::Dtype;

fn golden_specs() -> [KernelSpec; 6] {
    [
        // The smallest shape: one loop step, 16 row groups, f16 in and out.
        KernelSpec::decode(
            64,
            64,
            GammaSet::Retnet { heads: 8 },
            Dtype::F16,
            Arch::Sm80,
        ),
        // Runtime γ, a runtime loop over 8 steps, bf16 on sm_90.
        KernelSpec::decode(128, 256, GammaSet::Runtime, Dtype::Bf16, Arch::Sm90),
        // The paper's head dims, 32 baked decays, f32.
        KernelSpec::decode(
            256,
            512,
            GammaSet::Retnet { heads: 32 },
            Dtype::F32,
            Arch::Sm80,
        ),
        // The chunkwise forward on tensor cores (cp.async, ldmatrix, mma), runtime γ.
        KernelSpec::chunkwise(64, 64, 64, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80),
        // The chunkwise forward's FMA path, packed varlen input, baked decays.
        KernelSpec::chunkwise(
            64,
            64,
            32,
            GammaSet::Retnet { heads: 8 },
            Dtype::F32,
            Arch::Sm90,
        )
        .with_op(KernelOp::ChunkwiseVarlen),
        // The flash-style parallel forward on tensor cores, baked decays.
        KernelSpec::parallel(
            64,
            64,
            64,
            GammaSet::Retnet { heads: 8 },
            Dtype::F16,
            Arch::Sm80,
        ),
    ]
}

#[test]
fn generated_ptx_matches_the_snapshots() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for spec in golden_specs() {
        let path = dir.join(format!("{}.ptx", spec.slug()));
        let ptx = emit_ptx(&spec).unwrap();
        if update {
            std::fs::write(&path, &ptx).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        if want != ptx {
            let first = want
                .lines()
                .zip(ptx.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| want.lines().count().min(ptx.lines().count()));
            stale.push(format!(
                "{}: first difference at line {}:\n  golden:    {}\n  generated: {}",
                path.display(),
                first + 1,
                want.lines().nth(first).unwrap_or("<end>"),
                ptx.lines().nth(first).unwrap_or("<end>")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nreview, then: UPDATE_GOLDEN=1 cargo test -p kernel-gen --test golden",
        stale.join("\n")
    );
}
