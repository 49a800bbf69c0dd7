//! The attention decode baseline's generators: what they accept (typed errors otherwise),
//! how they are launched (plans, parameter tables) and the shape of their memory accesses.
//! (Their numbers are proven against the f64 reference in `tests/attention_decode_emulated.rs`.)

use kernel_gen::kernels::attention_decode::{
    MIN_PLANNED_SPLIT, PARTIAL_HEADER, plan, plan_with_split_len, tokens_per_step,
};
use kernel_gen::{Arch, GammaSet, GenError, KernelOp, KernelSpec, emit_ptx, launch_geometry};
use kernel_gen::{TileConfig, param_names};
use retention_core::Dtype;

fn spec(k: u32, v: u32, dtype: Dtype) -> KernelSpec {
    KernelSpec::attention_decode(k, v, dtype, Arch::Sm90)
}

fn unsupported_what(s: &KernelSpec) -> &'static str {
    match s.validate() {
        Err(GenError::UnsupportedSpec { what, .. }) => what,
        other => panic!("{s}: expected UnsupportedSpec, got {other:?}"),
    }
}

#[test]
fn unsupported_specs_are_typed_errors_naming_the_field() {
    let good = spec(128, 128, Dtype::Bf16);
    good.validate().unwrap();
    assert_eq!(unsupported_what(&spec(257, 128, Dtype::F32)), "head dim K");
    assert_eq!(unsupported_what(&spec(128, 1024, Dtype::F32)), "head dim V");
    let chunked = KernelSpec {
        chunk: Some(64),
        ..good
    };
    assert_eq!(unsupported_what(&chunked), "chunk");
    let named = KernelSpec {
        gammas: GammaSet::Retnet { heads: 8 },
        ..good
    };
    assert_eq!(unsupported_what(&named), "gamma set");
    let narrow = KernelSpec {
        tile: TileConfig {
            threads: 96,
            rows_per_step: 2,
        },
        ..good
    };
    assert_eq!(unsupported_what(&narrow), "tile threads");
    let deep = KernelSpec {
        tile: TileConfig {
            threads: 256,
            rows_per_step: 8,
        },
        ..good
    };
    assert_eq!(unsupported_what(&deep), "tile rows_per_step");
    // The same errors come out of every entry point, never a panic.
    assert!(emit_ptx(&chunked).is_err());
    assert!(emit_ptx(&chunked.attention_combine()).is_err());
    assert!(plan(&chunked, 1, 1, 10).is_err());
    assert!(launch_geometry(&chunked, 1, 1).is_err());
}

#[test]
fn bad_launch_sizes_are_launch_errors() {
    let s = spec(128, 128, Dtype::F16);
    for (rows, heads, context, split) in [
        (0, 4, 10, 5),
        (1, 0, 10, 5),
        (1, 4, 0, 5),
        (1, 4, 10, 0),
        (70_000, 4, 10, 5),
        (1, 70_000, 10, 5),
        (65_535, 65_535, 4096, 4096), // N·H·L past 2^32
    ] {
        assert!(
            matches!(
                plan_with_split_len(&s, rows, heads, context, split),
                Err(GenError::Launch(_))
            ),
            "{rows} {heads} {context} {split}"
        );
    }
}

#[test]
fn plans_cover_the_context_with_whole_steps_and_fill_the_gpu() {
    let s = spec(256, 512, Dtype::Bf16);
    let step = tokens_per_step(&s);
    // Batch 1, 16 heads, 32k context: 16 splits of whole steps, 256 CTAs (two per H100 SM
    // at most), then the combine.
    let p = plan(&s, 1, 16, 32768).unwrap();
    assert_eq!(p.split_len % step, 0);
    assert!(p.splits * p.split_len >= 32768 && (p.splits - 1) * p.split_len < 32768);
    assert_eq!(p.split.grid, [p.splits, 16, 1]);
    assert!(p.splits * 16 <= 2 * 132 && p.splits >= 8, "{p:?}");
    assert_eq!(p.split.block, [s.tile.threads, 1, 1]);
    let combine = p.combine.unwrap();
    assert_eq!((combine.grid, combine.block), ([1, 16, 1], [128, 1, 1]));
    assert_eq!(
        p.partial_floats,
        16 * u64::from(p.splits) * u64::from(512 + PARTIAL_HEADER)
    );
    // Short contexts and large batches need no split: one launch writes o.
    for (rows, context) in [(1, 7), (1, MIN_PLANNED_SPLIT), (64, 8192)] {
        let p = plan(&s, rows, 16, context).unwrap();
        assert_eq!(
            (p.splits, p.combine, p.partial_floats),
            (1, None, 0),
            "{rows} {context}"
        );
    }
    // Any explicit split length works, a multiple of the step or not.
    let p = plan_with_split_len(&s, 2, 3, 100, 33).unwrap();
    assert_eq!((p.splits, p.split.grid), (4, [4, 3, 2]));
}

#[test]
fn parameter_tables_match_the_emitted_signatures() {
    for s in [spec(64, 64, Dtype::F32), spec(256, 512, Dtype::Bf16)] {
        for (pass, want) in [
            (
                s,
                vec![
                    "p_q",
                    "p_k_cache",
                    "p_v_cache",
                    "p_o",
                    "p_partial",
                    "p_context",
                    "p_split_len",
                    "p_scale",
                ],
            ),
            (s.attention_combine(), vec!["p_partial", "p_o", "p_splits"]),
        ] {
            assert_eq!(param_names(&pass), want);
            let ptx = emit_ptx(&pass).unwrap();
            let sig: Vec<&str> = ptx
                .lines()
                .filter_map(|l| l.trim().strip_prefix(".param "))
                .map(|l| l.split_whitespace().nth(1).unwrap().trim_end_matches(','))
                .collect();
            assert_eq!(sig, want, "{pass}");
        }
    }
    assert_eq!(
        spec(64, 64, Dtype::F32).attention_combine().op,
        KernelOp::AttentionCombine
    );
}

#[test]
fn cached_rows_are_read_with_16_byte_loads_and_q_is_staged_once() {
    for dtype in Dtype::ALL {
        let s = spec(128, 128, dtype);
        let ptx = emit_ptx(&s).unwrap();
        // Every k/v load of a step (unmasked and masked) moves 16 bytes per lane.
        let wide = if dtype == Dtype::F32 {
            "ld.global.v4.f32"
        } else {
            "ld.global.v4.b32"
        };
        let loads = 2 * s.tile.rows_per_step as usize * 2; // k and v, full and masked step
        assert_eq!(
            ptx.lines().filter(|l| l.contains(wide)).count(),
            loads + usize::from(dtype == Dtype::F32), // f32 q staging is one v4 too
            "{s}"
        );
        assert!(ptx.contains(&format!(".shared .align 16 .b8 s_q[{}];", 128 * 4)));
        assert!(ptx.contains("shfl.sync.bfly.b32") && ptx.contains("ex2.approx.ftz.f32"));
    }
}
