//! The chunkwise generator's contract: which specs it serves (typed errors otherwise), how
//! each is launched, its parameter table, and which path (tensor cores or FMA) emits it.
//! Numerical proof against the f64 reference is in the root crate's
//! `tests/chunkwise_emulated.rs`.

use kernel_gen::math::chunk_tiling::{self, SharedLayout, TcLayout};
use kernel_gen::{
    Arch, GammaSet, GenError, KernelSpec, TileConfig, emit_ptx, launch_geometry, param_names,
};
use retention_core::Dtype;

fn spec(dtype: Dtype) -> KernelSpec {
    KernelSpec::chunkwise(64, 64, 64, GammaSet::Runtime, dtype, Arch::Sm80)
}

fn unsupported_field(s: &KernelSpec) -> &'static str {
    match emit_ptx(s) {
        Err(GenError::UnsupportedSpec { what, .. }) => what,
        other => panic!("expected an unsupported-spec error for {s:?}, got {other:?}"),
    }
}

#[test]
fn unsupported_chunkwise_specs_are_typed_errors() {
    let base = spec(Dtype::F16);
    assert_eq!(
        unsupported_field(&KernelSpec { k: 257, ..base }),
        "head dim K"
    );
    assert_eq!(
        unsupported_field(&KernelSpec { v: 0, ..base }),
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
    assert_eq!(
        unsupported_field(&KernelSpec {
            gammas: GammaSet::Retnet { heads: 0 },
            ..base
        }),
        "gamma set"
    );
    assert_eq!(
        unsupported_field(&KernelSpec {
            tile: TileConfig {
                threads: 128,
                rows_per_step: 4
            },
            ..base
        }),
        "tile"
    );
    assert_eq!(
        unsupported_field(&KernelSpec {
            chunk: Some(512),
            ..base
        }),
        "chunk"
    );
}

#[test]
fn long_chunks_walk_blocks_that_fit_shared_memory() {
    // K = 256 with C = 64: the whole chunk's f32 q and k tiles (128 KiB) plus the narrowest
    // state slice exceed sm_80's 163 KiB, so sm_80 walks it in blocks of 32; sm_90 holds it.
    let big = KernelSpec::chunkwise(256, 64, 64, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
    assert_eq!(chunk_tiling::fma_tiling(&big), (32, 64));
    let on_sm90 = KernelSpec {
        arch: Arch::Sm90,
        ..big
    };
    assert_eq!(chunk_tiling::fma_tiling(&on_sm90), (64, 64));
    for arch in Arch::ALL {
        for (k, v) in kernel_gen::catalog::CHUNKWISE_HEAD_DIMS {
            for c in chunk_tiling::SUPPORTED_CHUNKS {
                let s = KernelSpec::chunkwise(k, v, c, GammaSet::Runtime, Dtype::F32, arch);
                let (blk, vs) = chunk_tiling::fma_tiling(&s);
                let bytes = SharedLayout::blocked(k, vs, blk, c).total;
                assert!(bytes <= arch.max_dynamic_shared(), "{s}: {bytes} B");
                assert!(
                    blk <= c && c % blk == 0 && v % vs == 0,
                    "{s}: ({blk}, {vs})"
                );
                let g = launch_geometry(&s, 1, 1).unwrap();
                assert_eq!(g.grid, [1, 1, v / vs], "{s}");
                assert_eq!(g.dynamic_smem_bytes, bytes, "{s}");
                let ptx = emit_ptx(&s).unwrap();
                assert_eq!(ptx.contains(&format!("blocks of {blk}")), blk < c, "{s}");
            }
        }
    }
    // Long 16-bit chunks run on tensor cores: whole-chunk tiles where they fit (64 columns
    // of V per CTA), else streamed k, v blocks.
    let tc = |k, v, c, arch| {
        let s = KernelSpec::chunkwise(k, v, c, GammaSet::Runtime, Dtype::Bf16, arch);
        chunk_tiling::uses_tensor_cores(&s).then(|| launch_geometry(&s, 1, 1).unwrap())
    };
    let g = tc(128, 128, 128, Arch::Sm80).unwrap();
    assert_eq!((g.grid, g.block), ([1, 1, 2], [256, 1, 1]));
    assert_eq!(g.dynamic_smem_bytes, TcLayout::new(128, 64, 128).total);
    assert!(tc(64, 128, 256, Arch::Sm80).is_some());
    // K = 256 with C = 128: whole q and k tiles of 64 KiB each fit sm_90 only; sm_80 streams.
    assert_eq!(tc(256, 512, 128, Arch::Sm90).unwrap().grid, [1, 1, 8]);
    let streamed = |k, v, c, arch| {
        let s = KernelSpec::chunkwise(k, v, c, GammaSet::Runtime, Dtype::F16, arch);
        chunk_tiling::streamed_plan(&s).map(|p| (p, launch_geometry(&s, 1, 1).unwrap(), s))
    };
    assert!(streamed(256, 512, 128, Arch::Sm90).is_none());
    assert!(streamed(64, 64, 256, Arch::Sm80).is_none());
    let (plan, g, _) = streamed(256, 512, 128, Arch::Sm80).unwrap();
    // Passes of 64 rows, two 32-column groups of O, both k, v blocks resident.
    assert_eq!(
        (plan.pass_rows, plan.groups, plan.slots),
        (64, 2, 2),
        "{plan:?}"
    );
    assert_eq!((g.grid, g.block), ([1, 1, 8], [256, 1, 1]));
    assert_eq!(
        g.dynamic_smem_bytes,
        plan.layout(256, 64, 128).total,
        "{plan:?}"
    );
    for arch in Arch::ALL {
        // C = 256, K = 128: passes of 128 rows over all four blocks, resident.
        let (plan, g, _) = streamed(128, 64, 256, arch).unwrap();
        assert_eq!((plan.pass_rows, plan.groups, plan.slots), (128, 1, 4));
        assert_eq!(g.dynamic_smem_bytes, plan.layout(128, 64, 256).total);
        // C = 256, K = 256: one k, v slot refilled per block, passes of one block's rows.
        let (plan, g, s) = streamed(256, 256, 256, arch).unwrap();
        assert_eq!((plan.pass_rows, plan.groups, plan.slots), (64, 2, 1));
        assert_eq!((g.grid, g.block), ([1, 1, 4], [256, 1, 1]));
        assert!(g.dynamic_smem_bytes <= arch.max_dynamic_shared());
        let ptx = emit_ptx(&s).unwrap();
        assert!(ptx.contains("passes of 64 query rows"), "{s}");
        assert!(ptx.contains("refill the slot"), "{s}");
    }
    let long = KernelSpec::chunkwise(256, 256, 256, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
    assert_eq!(chunk_tiling::fma_tiling(&long), (32, 64));
    assert!(emit_ptx(&long).unwrap().contains("FMA, blocks of 32"));
}

#[test]
fn every_sixteen_bit_catalog_chunkwise_spec_runs_on_tensor_cores() {
    for s in kernel_gen::catalog::chunkwise_catalog() {
        assert_eq!(
            chunk_tiling::uses_tensor_cores(&s),
            s.dtype != Dtype::F32,
            "{s}"
        );
        let heads = match s.gammas {
            GammaSet::Retnet { heads } => heads,
            GammaSet::Runtime => 1,
        };
        let g = launch_geometry(&s, 1, heads).unwrap();
        assert!(g.dynamic_smem_bytes <= s.arch.max_dynamic_shared(), "{s}");
        if s.dtype != Dtype::F32 {
            assert_eq!(
                g.dynamic_smem_bytes,
                chunk_tiling::tc_layout(&s).total,
                "{s}"
            );
        }
    }
}

#[test]
fn launch_geometry_follows_the_path() {
    let tc = spec(Dtype::Bf16);
    assert!(chunk_tiling::uses_tensor_cores(&tc));
    let g = launch_geometry(&tc, 3, 5).unwrap();
    assert_eq!(g.grid, [3, 5, 1]);
    assert_eq!(g.block, [128, 1, 1]);
    assert_eq!(g.dynamic_smem_bytes, TcLayout::new(64, 64, 64).total);
    let wide = KernelSpec::chunkwise(128, 64, 32, GammaSet::Runtime, Dtype::F16, Arch::Sm90);
    assert_eq!(launch_geometry(&wide, 1, 1).unwrap().block, [256, 1, 1]);
    // K = V = 128 with C = 64: the state's 128 columns split over two CTAs (grid z), so a
    // thread's S, O and state tiles fit its registers.
    let tight = KernelSpec::chunkwise(128, 128, 64, GammaSet::Runtime, Dtype::Bf16, Arch::Sm90);
    assert!(chunk_tiling::uses_tensor_cores(&tight));
    let g = launch_geometry(&tight, 1, 3).unwrap();
    assert_eq!((g.grid, g.block), ([1, 3, 2], [256, 1, 1]));
    assert_eq!(g.dynamic_smem_bytes, TcLayout::new(128, 64, 64).total);
    // V = 256 on tensor cores: 128 columns per CTA.
    let split = KernelSpec::chunkwise(128, 256, 32, GammaSet::Runtime, Dtype::F16, Arch::Sm80);
    assert!(chunk_tiling::uses_tensor_cores(&split));
    assert_eq!(launch_geometry(&split, 2, 1).unwrap().grid, [2, 1, 2]);

    // The 6.7B head (K = 256, V = 512) splits V into 64-column slices: grid z = 8, on tensor
    // cores in bf16 (8 warps, two 16-row state slices each) and on the FMA path in f32.
    let paper = KernelSpec::chunkwise(256, 512, 32, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80);
    assert!(chunk_tiling::uses_tensor_cores(&paper));
    assert_eq!(chunk_tiling::value_slice(&paper), 64);
    let g = launch_geometry(&paper, 2, 16).unwrap();
    assert_eq!((g.grid, g.block), ([2, 16, 8], [256, 1, 1]));
    assert_eq!(g.dynamic_smem_bytes, TcLayout::new(256, 64, 32).total);
    let paper = KernelSpec {
        dtype: Dtype::F32,
        ..paper
    };
    assert_eq!(chunk_tiling::value_slice(&paper), 64);
    let g = launch_geometry(&paper, 2, 16).unwrap();
    assert_eq!(g.grid, [2, 16, 8]);
    assert_eq!(g.dynamic_smem_bytes, SharedLayout::new(256, 64, 32).total);
    let fma = spec(Dtype::F32);
    assert!(!chunk_tiling::uses_tensor_cores(&fma));
    let g = launch_geometry(&fma, 2, 1).unwrap();
    assert_eq!(g.block, [chunk_tiling::THREADS, 1, 1]);
    assert_eq!(g.dynamic_smem_bytes, SharedLayout::new(64, 64, 64).total);

    let named = KernelSpec::chunkwise(
        64,
        64,
        32,
        GammaSet::Retnet { heads: 8 },
        Dtype::F16,
        Arch::Sm80,
    );
    assert!(matches!(
        launch_geometry(&named, 1, 7),
        Err(GenError::Launch(_))
    ));
    assert!(matches!(
        launch_geometry(&named, 0, 8),
        Err(GenError::Launch(_))
    ));
    assert!(launch_geometry(&named, 1, 8).is_ok());
}

#[test]
fn parameter_table_matches_the_signature() {
    for gammas in [GammaSet::Runtime, GammaSet::Retnet { heads: 8 }] {
        for dtype in Dtype::ALL {
            let s = KernelSpec {
                gammas,
                ..spec(dtype)
            };
            let names = param_names(&s);
            let ptx = emit_ptx(&s).unwrap();
            let declared: Vec<&str> = ptx
                .lines()
                .filter_map(|l| l.trim().strip_prefix(".param "))
                .map(|l| l.split_whitespace().nth(1).unwrap().trim_end_matches(','))
                .collect();
            assert_eq!(declared, names, "{s}");
            let n = if gammas == GammaSet::Runtime { 10 } else { 8 };
            assert_eq!(names.len(), n);
        }
    }
}

#[test]
fn sixteen_bit_specs_use_tensor_cores_and_f32_uses_fma() {
    for dtype in Dtype::ALL {
        let ptx = emit_ptx(&spec(dtype)).unwrap();
        let tc = ptx.contains("mma.sync.aligned.m16n8k16");
        assert_eq!(tc, dtype != Dtype::F32, "{dtype:?}");
        assert_eq!(ptx.contains("ldmatrix.sync.aligned"), tc);
        assert_eq!(ptx.contains("cp.async.cg.shared.global"), tc);
        assert!(ptx.contains(".extern .shared .align"));
    }
}
