//! `KernelSpec`: stable hashing, validation with typed errors, launch geometry, catalog shape.

use std::collections::HashSet;

use kernel_gen::catalog::default_catalog;
use kernel_gen::spec::fnv1a64;
use kernel_gen::{
    Arch, GammaSet, GenError, KernelOp, KernelSpec, TileConfig, emit_ptx, launch_geometry,
    param_names,
};
use retention_core::{Dtype, RetentionError};

fn spec() -> KernelSpec {
    KernelSpec::decode(
        64,
        64,
        GammaSet::Retnet { heads: 8 },
        Dtype::F16,
        Arch::Sm80,
    )
}

#[test]
fn fnv1a_matches_its_published_test_vectors() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn entry_names_are_stable_and_readable() {
    let s = spec();
    assert_eq!(
        s.canonical(),
        "op=decode;k=64;v=64;chunk=none;gammas=retnet8;dtype=f16;arch=sm_80;threads=256;rows_per_step=4"
    );
    // Pinned: a change here renames every entry and invalidates every cache keyed by it.
    assert_eq!(s.entry(), "retention_decode_fdd1a785c7470e7b");
    assert_eq!(s.slug(), "decode_k64_v64_retnet8_f16_sm_80");
    let mut other = s;
    other.tile = TileConfig {
        threads: 128,
        rows_per_step: 2,
    };
    assert_ne!(other.entry(), s.entry());
    assert_eq!(other.slug(), "decode_k64_v64_retnet8_f16_sm_80_t128r2");
    assert!(
        emit_ptx(&s)
            .unwrap()
            .contains(".visible .entry retention_decode_fdd1a785c7470e7b(")
    );
}

#[test]
fn default_catalog_has_every_combination_once() {
    let cat = default_catalog();
    // Decode: 6 (K, V) pairs x 3 dtypes x 5 gamma sets x 2 archs, plus the wider value
    // slices the decode plan picks for larger batches (K = 64, V = 128: 1; K = V = 128: 2;
    // K = 128, V = 256 and K = V = 256: 3 each; K = 256, V = 512: 4) x 3 x 5 x 2. Chunkwise, dense and
    // varlen each: the 7 (K, V) pairs of the chunkwise catalog x C in {32, 64, 128, 256}
    // x 3 x 5 x 2 (sm_80 serves every one). Parallel: the 7 (K, V) pairs x 3 dtypes x 5 gamma
    // sets x 2 archs. Both two-phase ops for every dense chunkwise spec in their envelope
    // (C in {32, 64}: every 16-bit spec, 7 x 2 x 2 x 5 x 2 = 280; f32 where the FMA path
    // stages whole chunks, 130).
    // Attention, split and combine pass each: 4 (K, V) pairs x 3 dtypes x 2 archs.
    // Epilogue, forward and backward each: V in {64, 128, 256, 512} x 3 dtypes x 2 archs.
    let count = |op| cat.iter().filter(|s| s.op == op).count();
    assert_eq!(
        (
            count(KernelOp::Decode),
            count(KernelOp::Chunkwise),
            count(KernelOp::ChunkwiseVarlen),
            count(KernelOp::Parallel),
            count(KernelOp::ChunkStates),
            count(KernelOp::ChunkwiseSegmented),
            count(KernelOp::AttentionDecode),
            count(KernelOp::AttentionCombine),
            count(KernelOp::Epilogue),
            count(KernelOp::EpilogueBackward)
        ),
        (180 + 13 * 30, 840, 840, 210, 410, 410, 24, 24, 24, 24)
    );
    // Chunkwise backward, each of dq, dk, dv: the 7 (K, V) pairs x C in {32, 64} x 3 dtypes
    // x 5 gamma sets x 2 archs on the FMA units (the default tile), and the 16-bit ones
    // again on tensor cores (their own tile) where P <= 256: dq and dk not at V = 512
    // (6 pairs x 2 x 2 x 5 x 2 = 240), dv at every pair (280).
    let ops = [
        KernelOp::ChunkwiseBackwardDq,
        KernelOp::ChunkwiseBackwardDk,
        KernelOp::ChunkwiseBackwardDv,
    ];
    let count_tile = |op, tc: bool| {
        cat.iter()
            .filter(|s| s.op == op && (s.tile == TileConfig::default()) != tc)
            .count()
    };
    assert_eq!(ops.map(|op| count_tile(op, false)), [420; 3]);
    assert_eq!(ops.map(|op| count_tile(op, true)), [240, 240, 280]);
    // The varlen chunkwise backward (FMA only): 7 (K, V) pairs x C in {32, 64} x 3 dtypes x
    // 5 gamma sets x 2 archs each.
    assert_eq!(
        [
            KernelOp::ChunkwiseVarlenBackwardDq,
            KernelOp::ChunkwiseVarlenBackwardDk,
            KernelOp::ChunkwiseVarlenBackwardDv
        ]
        .map(count),
        [420; 3]
    );
    assert_eq!(count(KernelOp::HeadSum), 2, "one per arch");
    // 7 (K, V) x C in {32, 64} x 5 gamma sets x 2 archs.
    assert_eq!(count(KernelOp::ChunkBoundaryStates), 140);
    let entries: HashSet<String> = cat.iter().map(KernelSpec::entry).collect();
    let slugs: HashSet<String> = cat.iter().map(KernelSpec::slug).collect();
    assert_eq!(entries.len(), cat.len());
    assert_eq!(slugs.len(), cat.len());
    for s in &cat {
        s.validate().unwrap();
        match s.op {
            KernelOp::Decode => assert!(s.v == s.k || s.v == 2 * s.k, "{s}"),
            KernelOp::Chunkwise
            | KernelOp::ChunkwiseVarlen
            | KernelOp::Parallel
            | KernelOp::ChunkStates
            | KernelOp::ChunkwiseSegmented
            | KernelOp::ChunkwiseBackwardDq
            | KernelOp::ChunkwiseBackwardDk
            | KernelOp::ChunkwiseBackwardDv
            | KernelOp::ChunkwiseVarlenBackwardDq
            | KernelOp::ChunkwiseVarlenBackwardDk
            | KernelOp::ChunkwiseVarlenBackwardDv
            | KernelOp::ChunkBoundaryStates
            | KernelOp::ParallelBackwardDq
            | KernelOp::ParallelBackwardDk
            | KernelOp::ParallelBackwardDv
            | KernelOp::ParallelBackwardDlogGamma => {
                assert!(s.chunk.is_some(), "{s}");
            }
            KernelOp::AttentionDecode | KernelOp::AttentionCombine => {
                assert!(s.chunk.is_none() && s.gammas == GammaSet::Runtime, "{s}");
            }
            KernelOp::HeadSum => assert_eq!(*s, KernelSpec::head_sum(s.arch)),
            KernelOp::Epilogue
            | KernelOp::EpilogueBackward
            | KernelOp::RmsNorm
            | KernelOp::Gelu
            | KernelOp::CopyRows => {
                assert!(
                    s.chunk.is_none() && s.gammas == GammaSet::Runtime && s.k == s.v,
                    "{s}"
                );
            }
        }
    }
}

#[test]
fn spec_round_trips_through_json() {
    let s = KernelSpec::decode(128, 256, GammaSet::Runtime, Dtype::Bf16, Arch::Sm90);
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        json.contains("\"dtype\":\"bf16\"") && json.contains("\"arch\":\"sm_90\""),
        "{json}"
    );
    assert_eq!(serde_json::from_str::<KernelSpec>(&json).unwrap(), s);
}

fn unsupported_field(s: &KernelSpec) -> &'static str {
    match emit_ptx(s) {
        Err(GenError::UnsupportedSpec { what, .. }) => what,
        other => panic!("expected an unsupported-spec error for {s:?}, got {other:?}"),
    }
}

#[test]
fn unsupported_specs_are_typed_errors_before_emission() {
    let base = spec();
    assert_eq!(
        unsupported_field(&KernelSpec { k: 257, ..base }),
        "head dim K"
    );
    assert_eq!(
        unsupported_field(&KernelSpec { k: 0, ..base }),
        "head dim K"
    );
    assert_eq!(
        unsupported_field(&KernelSpec { v: 513, ..base }),
        "head dim V"
    );
    assert_eq!(
        unsupported_field(&KernelSpec { v: 1024, ..base }),
        "head dim V"
    );
    // A decode spec's chunk names a wider value slice: none is wider than K = V = 64's
    // default (all of V) and below 2·V, and a slice must be a power of two.
    for w in [32, 64, 128, 48] {
        assert_eq!(
            unsupported_field(&KernelSpec {
                chunk: Some(w),
                ..base
            }),
            "value slice (chunk)",
            "W = {w}"
        );
    }
    for heads in [0, 49] {
        let s = KernelSpec {
            gammas: GammaSet::Retnet { heads },
            ..base
        };
        assert_eq!(unsupported_field(&s), "gamma set");
    }
    let tile = |threads, rows_per_step| KernelSpec {
        tile: TileConfig {
            threads,
            rows_per_step,
        },
        ..base
    };
    assert_eq!(unsupported_field(&tile(100, 4)), "tile threads");
    assert_eq!(unsupported_field(&tile(8, 4)), "tile threads");
    assert_eq!(unsupported_field(&tile(256, 3)), "tile rows_per_step");
    // K = 64 rows over 16 row groups leaves 4 rows per thread: a step of 8 masks the rest.
    assert!(emit_ptx(&tile(256, 8)).is_ok());
    let e: RetentionError = emit_ptx(&KernelSpec { k: 257, ..base }).unwrap_err().into();
    assert!(matches!(e, RetentionError::Unsupported { .. }), "{e:?}");
    assert!("sm_75".parse::<Arch>().is_err());
}

#[test]
fn other_tiles_also_emit() {
    for (threads, rows_per_step) in [(128, 1), (128, 2), (512, 2), (1024, 1)] {
        let s = KernelSpec {
            k: 256,
            v: 256,
            tile: TileConfig {
                threads,
                rows_per_step,
            },
            ..spec()
        };
        let ptx = emit_ptx(&s).unwrap();
        assert!(ptx.contains(&format!(".maxntid {threads}, 1, 1")));
    }
}

#[test]
fn launch_geometry_is_one_cta_per_row_and_head() {
    let named = spec();
    let g = launch_geometry(&named, 5, 8).unwrap();
    assert_eq!(g.grid, [5, 8, 1]);
    assert_eq!(g.block, [256, 1, 1]);
    assert_eq!(g.dynamic_smem_bytes, 0);
    assert!(matches!(
        launch_geometry(&named, 5, 7),
        Err(GenError::Launch(_))
    ));
    assert!(matches!(
        launch_geometry(&named, 0, 8),
        Err(GenError::Launch(_))
    ));
    let runtime = KernelSpec {
        gammas: GammaSet::Runtime,
        ..named
    };
    assert_eq!(launch_geometry(&runtime, 3, 12).unwrap().grid, [3, 12, 1]);
    assert!(matches!(
        launch_geometry(&runtime, 3, 70_000),
        Err(GenError::Launch(_))
    ));
    assert!(matches!(
        launch_geometry(&KernelSpec { k: 257, ..named }, 1, 8),
        Err(GenError::UnsupportedSpec { .. })
    ));
}

#[test]
fn signature_lists_params_in_documented_order() {
    for gammas in [GammaSet::Retnet { heads: 10 }, GammaSet::Runtime] {
        let s = KernelSpec { gammas, ..spec() };
        let ptx = emit_ptx(&s).unwrap();
        let sig: Vec<&str> = ptx
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".param "))
            .map(|l| l.split_whitespace().nth(1).unwrap().trim_end_matches(','))
            .collect();
        assert_eq!(sig, param_names(&s));
    }
    let runtime = KernelSpec {
        gammas: GammaSet::Runtime,
        ..spec()
    };
    assert_eq!(
        param_names(&runtime),
        [
            "p_q",
            "p_k",
            "p_v",
            "p_state",
            "p_slots",
            "p_o",
            "p_n",
            "p_scale",
            "p_heads",
            "p_log2_gamma"
        ]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Validation and emission agree on every spec: valid ones emit their entry, invalid ones
    /// fail with a typed error and no text.
    #[test]
    fn validation_agrees_with_emission(
        k in proptest::sample::select(vec![0u32, 16, 64, 96, 128, 256, 512]),
        v in proptest::sample::select(vec![0u32, 32, 64, 128, 256, 512, 1024]),
        threads in proptest::sample::select(vec![32u32, 64, 100, 128, 256, 512, 1024, 2048]),
        rows_per_step in 0u32..10,
        heads in 0u32..60,
        runtime in proptest::bool::ANY,
        dtype in proptest::sample::select(Dtype::ALL.to_vec()),
        arch in proptest::sample::select(Arch::ALL.to_vec()),
        chunk in proptest::option::weighted(0.1, 1u32..128),
    ) {
        let gammas = if runtime { GammaSet::Runtime } else { GammaSet::Retnet { heads } };
        let s = KernelSpec {
            chunk,
            tile: TileConfig { threads, rows_per_step },
            ..KernelSpec::decode(k, v, gammas, dtype, arch)
        };
        match (s.validate(), emit_ptx(&s)) {
            (Ok(()), Ok(ptx)) => {
                let entry_line = format!(".visible .entry {}(", s.entry());
                proptest::prop_assert!(ptx.contains(&entry_line));
            }
            (Err(a), Err(b)) => {
                proptest::prop_assert_eq!(&a, &b);
                let is_spec_error = matches!(a, GenError::UnsupportedSpec { .. });
                proptest::prop_assert!(is_spec_error);
            }
            (a, b) => proptest::prop_assert!(false, "validate {:?} but emit {:?}", a, b.map(|_| ())),
        }
    }
}
