//! The parallel generator's contract: which specs it serves (typed errors otherwise), how
//! each is launched, its parameter table, and which path (tensor cores or FMA) emits it.
//! Numerical proof against the f64 reference is in the root crate's
//! `tests/parallel_emulated.rs`.

use kernel_gen::registry::family;
use kernel_gen::{
    Arch, GammaSet, GenError, KernelOp, KernelPath, KernelPlan, KernelSpec, LaunchSize, TileConfig,
    default_parallel_tile as default_tile, emit_ptx, launch_geometry, param_names, plan,
};
use retention_core::Dtype;

fn spec(dtype: Dtype) -> KernelSpec {
    KernelSpec::parallel(
        64,
        64,
        default_tile(dtype),
        GammaSet::Runtime,
        dtype,
        Arch::Sm80,
    )
}

fn plan_for(s: &KernelSpec, rows: u32, heads: u32, tokens: u32) -> KernelPlan {
    let size = LaunchSize {
        rows,
        heads,
        tokens,
    };
    plan(s, size).unwrap()
}

fn unsupported_field(s: &KernelSpec) -> &'static str {
    match emit_ptx(s) {
        Err(GenError::UnsupportedSpec { what, .. }) => what,
        other => panic!("expected an unsupported-spec error for {s:?}, got {other:?}"),
    }
}

#[test]
fn unsupported_parallel_specs_are_typed_errors() {
    for dtype in Dtype::ALL {
        let base = spec(dtype);
        assert_eq!(
            unsupported_field(&KernelSpec { k: 0, ..base }),
            "head dim K"
        );
        assert_eq!(
            unsupported_field(&KernelSpec { k: 512, ..base }),
            "head dim K"
        );
        assert_eq!(
            unsupported_field(&KernelSpec { v: 513, ..base }),
            "head dim V"
        );
        assert_eq!(
            unsupported_field(&KernelSpec {
                chunk: None,
                ..base
            }),
            "chunk"
        );
        assert_eq!(
            unsupported_field(&KernelSpec {
                chunk: Some(16),
                ..base
            }),
            "chunk"
        );
        let gammas = GammaSet::Retnet { heads: 49 };
        assert_eq!(
            unsupported_field(&KernelSpec { gammas, ..base }),
            "gamma set"
        );
        let tile = TileConfig {
            threads: 128,
            rows_per_step: 4,
        };
        assert_eq!(unsupported_field(&KernelSpec { tile, ..base }), "tile");
    }
    // The f32 path's tiles at B = 64, K = 256 exceed sm_80's shared memory.
    let big = KernelSpec::parallel(256, 64, 64, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
    assert_eq!(unsupported_field(&big), "shared memory");
    // The generator refuses other ops.
    let chunkwise = KernelSpec::chunkwise(64, 64, 64, GammaSet::Runtime, Dtype::F16, Arch::Sm80);
    assert!(matches!(
        (family(KernelOp::Parallel).validate)(&chunkwise),
        Err(GenError::UnsupportedSpec { what: "op", .. })
    ));
}

#[test]
fn parameters_are_q_k_v_o_t_scale_then_runtime_gamma() {
    let named = KernelSpec {
        gammas: GammaSet::Retnet { heads: 8 },
        ..spec(Dtype::Bf16)
    };
    assert_eq!(
        param_names(&named),
        ["p_q", "p_k", "p_v", "p_o", "p_t", "p_scale"]
    );
    assert_eq!(
        param_names(&spec(Dtype::F32)),
        [
            "p_q",
            "p_k",
            "p_v",
            "p_o",
            "p_t",
            "p_scale",
            "p_heads",
            "p_log2_gamma"
        ]
    );
    for dtype in Dtype::ALL {
        let ptx = emit_ptx(&spec(dtype)).unwrap();
        let params: Vec<&str> = ptx
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".param "))
            .collect();
        assert_eq!(params.len(), 8, "{ptx}");
        assert!(ptx.contains(&format!(".entry {}(", spec(dtype).entry())));
    }
}

#[test]
fn launch_covers_query_tiles_and_value_slices() {
    // Tensor cores: B/16 warps; V split in 128-column slices on grid z.
    let tc = KernelSpec::parallel(256, 512, 64, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80);
    assert_eq!(plan_for(&tc, 3, 5, 1).path, KernelPath::TensorCores);
    assert_eq!(plan_for(&tc, 3, 5, 1).value_slice, 128);
    let g = launch_geometry(&tc, 3, 5).unwrap();
    assert_eq!((g.grid, g.block), ([3, 5, 4], [128, 1, 1]));
    let g = plan_for(&tc, 3, 5, 1000).geometry;
    assert_eq!(g.grid, [3, 5, 4 * 16]);
    assert_eq!(plan_for(&tc, 3, 5, 0).geometry.grid, [3, 5, 4]);
    // Capped at the grid limit, still a multiple of the slices.
    let z = plan_for(&tc, 1, 1, u32::MAX).geometry.grid[2];
    assert!(z <= 65535 && z.is_multiple_of(4), "{z}");
    // FMA: 256 threads; the widest value slice that fits the arch's shared memory.
    for arch in Arch::ALL {
        let f = KernelSpec::parallel(256, 512, 32, GammaSet::Runtime, Dtype::F32, arch);
        let g = launch_geometry(&f, 1, 1).unwrap();
        assert_eq!(g.block, [256, 1, 1]);
        assert!(g.dynamic_smem_bytes <= arch.max_dynamic_shared());
        assert_eq!(plan_for(&f, 1, 1, 1).path, KernelPath::Fma);
        assert_eq!(g.grid[2] * plan_for(&f, 1, 1, 1).value_slice, 512);
    }
    // Launch errors are typed.
    assert!(matches!(
        launch_geometry(&tc, 0, 5),
        Err(GenError::Launch(_))
    ));
    let named = KernelSpec {
        gammas: GammaSet::Retnet { heads: 8 },
        ..tc
    };
    assert!(matches!(
        launch_geometry(&named, 1, 4),
        Err(GenError::Launch(_))
    ));
}

#[test]
fn sixteen_bit_specs_run_on_tensor_cores_and_f32_on_fma() {
    for dtype in Dtype::ALL {
        let ptx = emit_ptx(&spec(dtype)).unwrap();
        let tc = dtype != Dtype::F32;
        assert_eq!(ptx.contains("mma.sync.aligned.m16n8k16"), tc, "{dtype:?}");
        assert_eq!(ptx.contains("cp.async"), tc, "{dtype:?}");
        assert_eq!(ptx.contains("ldmatrix"), tc, "{dtype:?}");
    }
    let cat = kernel_gen::catalog::default_catalog();
    assert!(
        cat.iter()
            .any(|s| s.op == KernelOp::Parallel && s.k == 256 && s.v == 512)
    );
}
