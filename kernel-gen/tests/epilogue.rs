//! The epilogue family's spec checks, launch geometry and plan (ARCHITECTURE §3): typed
//! errors before a single instruction, one warp per (token, head) row, and the parameter
//! table the runtime binds by name. The kernels' numbers are checked on the emulator in
//! `retention-check/tests/epilogue_cases.rs`.

use kernel_gen::{
    Arch, GammaSet, GenError, KernelPath, KernelSpec, LaunchSize, TileConfig, emit_ptx,
    launch_geometry, param_names, plan,
};
use retention_core::Dtype;

fn unsupported_field(s: &KernelSpec) -> &'static str {
    match emit_ptx(s) {
        Err(GenError::UnsupportedSpec { what, .. }) => what,
        other => panic!("expected an unsupported-spec error for {s:?}, got {other:?}"),
    }
}

#[test]
fn specs_it_does_not_serve_are_typed_errors() {
    let base = KernelSpec::epilogue(100, Dtype::F16, Arch::Sm80);
    emit_ptx(&base).unwrap();
    emit_ptx(&base.epilogue_backward()).unwrap();
    let wide = KernelSpec::epilogue(513, Dtype::F16, Arch::Sm80);
    assert_eq!(unsupported_field(&wide), "head dim V");
    let empty = KernelSpec::epilogue(0, Dtype::F16, Arch::Sm80);
    assert_eq!(unsupported_field(&empty), "head dim V");
    assert_eq!(
        unsupported_field(&KernelSpec { k: 64, ..base }),
        "head dim K"
    );
    assert_eq!(
        unsupported_field(&KernelSpec {
            chunk: Some(64),
            ..base
        }),
        "chunk"
    );
    assert_eq!(
        unsupported_field(&KernelSpec {
            gammas: GammaSet::Retnet { heads: 8 },
            ..base
        }),
        "gamma set"
    );
    for (threads, rows_per_step, field) in [
        (48, 1, "tile threads"),
        (512, 1, "tile threads"),
        (128, 2, "tile rows_per_step"),
    ] {
        let tile = TileConfig {
            threads,
            rows_per_step,
        };
        assert_eq!(unsupported_field(&KernelSpec { tile, ..base }), field);
    }
}

#[test]
fn one_warp_per_row_and_the_parameter_table() {
    let spec = KernelSpec::epilogue(64, Dtype::Bf16, Arch::Sm90);
    // 7 tokens x 3 heads = 21 rows, 4 per 128-thread CTA: 6 CTAs, the last with one row.
    let g = launch_geometry(&spec, 7, 3).unwrap();
    assert_eq!(
        (g.grid, g.block, g.dynamic_smem_bytes),
        ([6, 1, 1], [128, 1, 1], 0)
    );
    let p = plan(
        &spec,
        LaunchSize {
            rows: 2,
            heads: 3,
            tokens: 5,
        },
    )
    .unwrap();
    assert_eq!(p.path, KernelPath::Vector);
    assert_eq!((p.geometry.grid, p.workspace_bytes), ([8, 1, 1], 0));
    assert_eq!(param_names(&spec), ["p_o", "p_g", "p_y", "p_rows", "p_eps"]);
    assert_eq!(
        param_names(&spec.epilogue_backward()),
        ["p_o", "p_g", "p_dy", "p_do", "p_dg", "p_rows", "p_eps"]
    );
    let ptx = emit_ptx(&spec).unwrap();
    for name in param_names(&spec) {
        assert!(ptx.contains(name), "{name} missing from the entry");
    }
    assert!(matches!(
        launch_geometry(&spec, 0, 3),
        Err(GenError::Launch(_))
    ));
    assert!(matches!(
        launch_geometry(&spec, u32::MAX, 2),
        Err(GenError::Launch(_))
    ));
}
