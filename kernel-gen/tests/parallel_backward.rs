//! The parallel backward family's contract: which specs it serves (typed errors otherwise),
//! its four ops' parameter tables, plans (FMA path, output slices, one CTA per owned tile,
//! the d log γ pass's partials as workspace) and launch geometry. Numerical proof against
//! the f64 reference is `retention-check/tests/parallel_backward_emulated.rs`.

use kernel_gen::kernels::parallel_backward::{
    DEFAULT_TILE, Pass, dlog_gamma_partials, layout, passes, value_slice,
};
use kernel_gen::registry::family;
use kernel_gen::{
    Arch, GammaSet, GenError, KernelOp, KernelPath, KernelSpec, LaunchSize, TileConfig, emit_ptx,
    launch_geometry, param_names, plan,
};
use retention_core::Dtype;

fn dq(k: u32, v: u32, arch: Arch) -> KernelSpec {
    passes(k, v, DEFAULT_TILE, GammaSet::Runtime, Dtype::F32, arch)[0]
}

fn unsupported_field(s: &KernelSpec) -> &'static str {
    match emit_ptx(s) {
        Err(GenError::UnsupportedSpec { what, .. }) => what,
        other => panic!("expected an unsupported-spec error for {s:?}, got {other:?}"),
    }
}

#[test]
fn one_family_serves_the_four_ops() {
    for pass in Pass::ALL {
        assert_eq!(family(pass.op()).name, "parallel_backward");
        assert_eq!(Pass::of(pass.op()), Some(pass));
    }
    assert_eq!(Pass::of(KernelOp::Parallel), None);
}

#[test]
fn unsupported_specs_are_typed_errors_naming_the_field() {
    let s = dq(64, 64, Arch::Sm80);
    assert_eq!(unsupported_field(&KernelSpec { k: 0, ..s }), "head dim K");
    assert_eq!(unsupported_field(&KernelSpec { k: 257, ..s }), "head dim K");
    assert_eq!(unsupported_field(&KernelSpec { v: 513, ..s }), "head dim V");
    assert_eq!(unsupported_field(&KernelSpec { chunk: None, ..s }), "chunk");
    assert_eq!(
        unsupported_field(&KernelSpec {
            chunk: Some(16),
            ..s
        }),
        "chunk"
    );
    let tile = TileConfig {
        threads: 128,
        ..TileConfig::default()
    };
    assert_eq!(unsupported_field(&KernelSpec { tile, ..s }), "tile");
    let many = GammaSet::Retnet { heads: 49 };
    assert_eq!(
        unsupported_field(&KernelSpec { gammas: many, ..s }),
        "gamma set"
    );
    // Tile 64 at V = 512: the two f32 score-side tiles alone are 256 KiB.
    let wide = KernelSpec {
        chunk: Some(64),
        ..dq(256, 512, Arch::Sm90)
    };
    assert_eq!(unsupported_field(&wide), "shared memory");
    // Not a backward op: this family's validate refuses it.
    let fwd = KernelSpec {
        op: KernelOp::Parallel,
        ..s
    };
    assert!((family(s.op).validate)(&fwd).is_err());
}

#[test]
fn parameter_tables_differ_only_in_the_output() {
    let [q, k, v, g] = passes(64, 64, 32, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80);
    let common = |out| {
        vec![
            "p_q",
            "p_k",
            "p_v",
            "p_do",
            out,
            "p_t",
            "p_scale",
            "p_heads",
            "p_log2_gamma",
        ]
    };
    assert_eq!(param_names(&q), common("p_dq"));
    assert_eq!(param_names(&k), common("p_dk"));
    assert_eq!(param_names(&v), common("p_dv"));
    assert_eq!(param_names(&g), common("p_dlog_gamma_partial"));
    let named = KernelSpec {
        gammas: GammaSet::Retnet { heads: 8 },
        ..q
    };
    assert_eq!(param_names(&named).len(), 7);
}

/// Output slices fit the arch's shared memory: K = 256, V = 512 is sliced on sm_80 and
/// less (or not) on sm_90; every layout fits.
#[test]
fn output_slices_fit_shared_memory() {
    for arch in Arch::ALL {
        for spec in passes(256, 512, 32, GammaSet::Runtime, Dtype::F32, arch) {
            let pass = Pass::of(spec.op).unwrap();
            let ws = value_slice(&spec);
            assert!(ws >= 32 && ws.is_power_of_two(), "{}", spec.slug());
            let bytes = layout(&spec, pass).total;
            assert!(
                bytes <= arch.max_dynamic_shared(),
                "{}: {bytes}",
                spec.slug()
            );
        }
    }
    assert!(value_slice(&dq(256, 512, Arch::Sm80)) < 256);
    assert_eq!(value_slice(&dq(64, 64, Arch::Sm80)), 64);
}

/// One CTA per (row, head, slice, owned tile) for T tokens, one per (row, head, slice)
/// without T; the d log γ pass's workspace is one f32 per CTA.
#[test]
fn plans_launch_one_cta_per_owned_tile() {
    let size = LaunchSize {
        rows: 2,
        heads: 3,
        tokens: 100,
    };
    for spec in passes(60, 100, 32, GammaSet::Runtime, Dtype::F16, Arch::Sm80) {
        let p = plan(&spec, size).unwrap();
        assert_eq!(p.path, KernelPath::Fma, "{}", spec.slug());
        let slices = p.geometry.grid[2] / 4; // ⌈100 / 32⌉ = 4 owned tiles
        assert_eq!(p.geometry.grid, [2, 3, 4 * slices], "{}", spec.slug());
        assert_eq!(p.geometry.block, [256, 1, 1]);
        let walk = launch_geometry(&spec, 2, 3).unwrap();
        assert_eq!(walk.grid, [2, 3, slices], "{}", spec.slug());
        let want = if spec.op == KernelOp::ParallelBackwardDlogGamma {
            4 * dlog_gamma_partials(&p.geometry) as u64
        } else {
            0
        };
        assert_eq!(p.workspace_bytes, want, "{}", spec.slug());
    }
}
