//! Head dims outside the catalog — any K in 1..=256 and V in 1..=512 — for the decode step
//! and the softmax-attention decode baseline, generated on demand, run as PTX in the
//! emulator (bounds, races and uninitialised shared reads checked) and held to the f64
//! reference (`retention_kernels::reference`) with the catalog checks' tolerances: f32
//! outputs ≤ 1e-5 max relative error, f16/bf16 outputs ≤ 5e-3 relative RMSE, the f32 decode
//! state ≤ 1e-5 max relative error, untouched state slots bit-identical, and no read of
//! shared memory nothing wrote.
//!
//! The sampled dims (8, 16, 24, 60, 100, 200 and odd ones: 1, 7, 33, 510) cover every tail
//! the generators mask: V not a multiple of 4 (2- and 1-column accesses), a last value slice
//! that ends past V, a last row step that ends past K, and rows whose byte offset allows
//! only narrow loads.

use kernel_gen::emu::{EmuReport, Module};
use kernel_gen::kernels::attention_decode::{
    AttentionDecodePlan, partial_row_floats, plan, plan_with_split_len, tokens_per_step,
};
use kernel_gen::kernels::decode::{column_width, value_slice, value_slices};
use kernel_gen::ptxas;
use kernel_gen::{
    Arch, GammaSet, GenError, KernelOp, KernelSpec, TileConfig, emit_ptx, launch_geometry,
};
use retention_check::attention::{Case, run_case};
use retention_check::decode::{DecodeCase, check_case};
use retention_check::io::{EmuCheck, gammas_for};
use retention_core::Dtype;

/// q's scale in every run (not the default, so a kernel that ignores it fails).
const SCALE: f64 = 0.37;

// ---------------------------------------------------------------------------------------
// Decode step
// ---------------------------------------------------------------------------------------

/// Two decode steps of `spec` for 3 rows in scrambled slots of a 5-slot pool through the
/// one decode check (`retention_check::decode::check_case`), held to its tolerances, with no
/// read of unwritten shared memory in any dtype. Returns the emulator report of the last
/// step, whose traffic is checked exactly.
fn check_decode(spec: &KernelSpec, seed: u64) -> EmuReport {
    let heads = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => 3,
    };
    let (n, h, k, v) = (3usize, heads, spec.k as usize, spec.v as usize);
    let capacity = n + 2;
    let case = DecodeCase {
        rows: n,
        gammas: gammas_for(spec.gammas, h).unwrap(),
        slots: (0..n).map(|r| (capacity - 1 + 2 * r) % capacity).collect(),
        capacity,
        scale: SCALE,
    };
    let ptx = emit_ptx(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let geo = launch_geometry(spec, n as u32, h as u32).unwrap();
    assert_eq!(geo.grid, [n as u32, h as u32, value_slices(spec)], "{spec}");
    let check = check_case(spec, &module, &case, seed).unwrap_or_else(|e| panic!("{spec}: {e}"));
    if let Some(why) = check.failure(spec.dtype) {
        panic!("{spec}: {why}");
    }
    assert_eq!(
        check.unwritten_shared_reads, 0,
        "{spec}: reads of shared memory nothing wrote"
    );
    let report = check
        .report
        .and_then(|r| r.emulated().cloned())
        .expect("an emulated report");
    // Masked tails move no extra bytes: the state once each way, v once and o once; every
    // slice's CTA stages q and k and reads the row's slot (and runtime log2 γ_h).
    let esize = spec.dtype.size_bytes();
    assert_eq!(
        report.global_bytes_written as usize,
        n * h * (k * v * 4 + v * esize),
        "{spec}"
    );
    let slices = value_slices(spec) as usize;
    let scalars = if spec.gammas == GammaSet::Runtime {
        8
    } else {
        4
    };
    assert_eq!(
        report.global_bytes_read as usize,
        n * h * (k * v * 4 + v * esize + slices * (2 * k * esize + scalars)),
        "{spec}"
    );
    report
}

/// The sampled (K, V) pairs: the sizes in both roles, odd sizes, the widest V with
/// 2-column accesses (510) and both maxima.
const DECODE_DIMS: [(u32, u32); 12] = [
    (8, 8),
    (16, 24),
    (24, 16),
    (60, 100),
    (100, 60),
    (200, 200),
    (1, 1),
    (7, 33),
    (33, 7),
    (100, 510),
    (256, 24),
    (16, 512),
];

#[test]
fn decode_any_head_dims_match_the_reference() {
    for (i, &(k, v)) in DECODE_DIMS.iter().enumerate() {
        for (j, dtype) in Dtype::ALL.into_iter().enumerate() {
            // Named and runtime γ alternate, so each covers every dtype.
            let gammas = if (i + j) % 2 == 0 {
                GammaSet::Retnet { heads: 2 }
            } else {
                GammaSet::Runtime
            };
            let spec = KernelSpec::decode(k, v, gammas, dtype, Arch::Sm80);
            check_decode(&spec, 100 + (i * 3 + j) as u64);
        }
    }
}

#[test]
fn decode_tails_with_other_tiles_match_the_reference() {
    // Several slices with a partial last one, one row group (R = 1), a single slice wider
    // than V with a row tail, and eight rows per step over an odd K.
    for (k, v, threads, rows_per_step) in [
        (100, 200, 64, 2),
        (60, 100, 1024, 1),
        (33, 24, 128, 8),
        (200, 60, 512, 4),
    ] {
        for dtype in [Dtype::F32, Dtype::Bf16] {
            let spec = KernelSpec {
                tile: TileConfig {
                    threads,
                    rows_per_step,
                },
                ..KernelSpec::decode(k, v, GammaSet::Runtime, dtype, Arch::Sm90)
            };
            check_decode(&spec, u64::from(k * 1000 + v));
        }
    }
}

#[test]
fn decode_accesses_are_as_wide_as_the_rows_allow() {
    // V a multiple of 4: v4 state accesses; of 2 only: v2; odd: scalar. A single slice
    // never reads its slice index.
    for (v, cw, vec) in [(100, 4, "v4.f32"), (510, 2, "v2.f32"), (33, 1, "")] {
        let spec = KernelSpec::decode(60, v, GammaSet::Runtime, Dtype::F16, Arch::Sm80);
        assert_eq!(column_width(v), cw);
        let ptx = emit_ptx(&spec).unwrap();
        if vec.is_empty() {
            assert!(!ptx.contains("ld.global.v2.f32") && !ptx.contains("ld.global.v4.f32"));
        } else {
            assert!(ptx.contains(&format!("ld.global.{vec}")), "{spec}");
            assert!(ptx.contains(&format!("st.global.{vec}")), "{spec}");
        }
        assert_eq!(value_slice(&spec) % cw, 0);
        assert!(value_slices(&spec) * value_slice(&spec) >= v);
        assert_eq!(ptx.contains("%ctaid.z"), value_slices(&spec) > 1, "{spec}");
    }
}

#[test]
fn decode_rejects_dims_past_the_maxima_with_typed_errors() {
    for (k, v, what) in [
        (0, 64, "head dim K"),
        (257, 64, "head dim K"),
        (64, 0, "head dim V"),
        (64, 513, "head dim V"),
    ] {
        let spec = KernelSpec::decode(k, v, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
        match emit_ptx(&spec) {
            Err(GenError::UnsupportedSpec { what: w, .. }) => assert_eq!(w, what, "{k} {v}"),
            other => panic!("K={k} V={v}: expected UnsupportedSpec, got {other:?}"),
        }
    }
}

/// ptxas (when installed) assembles sampled new dims for both archs with zero spills.
#[test]
fn decode_sampled_dims_assemble_without_spills() {
    let specs = SAMPLED.iter().enumerate().flat_map(|(i, &(k, v))| {
        Arch::ALL.map(|arch| {
            let dtype = Dtype::ALL[i % Dtype::ALL.len()];
            KernelSpec::decode(k, v, GammaSet::Runtime, dtype, arch)
        })
    });
    assemble_without_spills(&specs.collect::<Vec<_>>());
}

/// Shapes assembled by ptxas: every dtype over the sample, one per shape (the dtype changes
/// only the loads and stores).
const SAMPLED: [(u32, u32); 7] = [
    (8, 8),
    (60, 100),
    (100, 60),
    (200, 200),
    (7, 33),
    (100, 510),
    (256, 510),
];

/// Assemble `specs` with ptxas when it is installed (a notice otherwise): no errors, no
/// spills, no stack frame; prints the registers of each.
fn assemble_without_spills(specs: &[KernelSpec]) {
    let Some(ptxas) = ptxas::find_ptxas() else {
        eprintln!("notice: ptxas not found (RETENTION_PTXAS or PATH); ptxas check skipped");
        return;
    };
    let modules: Vec<(String, Arch)> = specs
        .iter()
        .map(|s| (emit_ptx(s).unwrap(), s.arch))
        .collect();
    for (spec, info) in specs.iter().zip(ptxas::assemble_all(&ptxas, &modules)) {
        let info = info.unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert!(
            !info.spills() && info.stack_frame_bytes == 0,
            "{spec}: {info:?}"
        );
        eprintln!("{spec}: {} registers, 0 spills", info.registers);
    }
}

// ---------------------------------------------------------------------------------------
// Softmax-attention decode baseline (split pass + combine)
// ---------------------------------------------------------------------------------------

/// One attention decode of 2 rows × 2 heads over `context` tokens, split as `split_len`
/// says (`None`: as planned), through the one attention check
/// (`retention_check::attention::run_case`), held to its tolerance with no read of unwritten
/// shared memory. Returns the plan and the global bytes both passes moved.
fn check_attention(
    spec: &KernelSpec,
    context: u32,
    split_len: Option<u32>,
    scale: f64,
    seed: u64,
) -> (AttentionDecodePlan, u64) {
    let module = Module::parse(&emit_ptx(spec).unwrap()).unwrap();
    let case = Case {
        context,
        split_len,
        scale,
    };
    let run = run_case(spec, &module, &module, (2, 2), case, seed)
        .unwrap_or_else(|e| panic!("{spec} L={context}: {e}"));
    let tol = EmuCheck::o_tolerance(spec.dtype);
    assert!(
        run.o_error <= tol,
        "{spec} L={context} split {split_len:?}: o error {:.2e} > {tol:.0e}",
        run.o_error
    );
    let mut moved = 0;
    for report in std::iter::once(&run.split).chain(&run.combine) {
        let r = report.emulated().expect("an emulated report");
        assert_eq!(r.shared_uninit_reads, 0, "{spec} L={context}");
        moved += r.global_bytes_read + r.global_bytes_written;
    }
    (run.plan, moved)
}

/// The catalog check's cases: one token; seven with logits that overflow exp in f32 without
/// the running max; two and a half CTA steps cut into one split per step (the combine runs,
/// the last split partial) and into splits that are not a multiple of the step; 41 splits
/// of three tokens (the combine's batches wrap).
fn check_attention_cases(spec: &KernelSpec, seed: u64) {
    let step = tokens_per_step(spec);
    let long = 2 * step + step / 2 + 3;
    let huge = 120.0 / f64::from(spec.k).sqrt();
    for (i, (context, split_len, scale)) in [
        (1, None, SCALE),
        (7, None, huge),
        (long, Some(step), SCALE),
        (long, Some(step / 2 + 5), SCALE),
        (41 * 3 - 1, Some(3), SCALE),
    ]
    .into_iter()
    .enumerate()
    {
        let (plan, _) = check_attention(spec, context, split_len, scale, seed + i as u64);
        if split_len.is_some() {
            assert!(
                plan.splits > 1 && plan.combine.is_some(),
                "{spec} L={context}"
            );
        }
    }
}

const ATTENTION_DIMS: [(u32, u32); 11] = [
    (8, 8),
    (16, 24),
    (24, 16),
    (60, 100),
    (100, 60),
    (200, 200),
    (1, 1),
    (7, 33),
    (33, 7),
    (256, 510),
    (100, 512),
];

/// Every sampled (K, V) in `dtype`.
fn attention_dims_in(dtype: Dtype) {
    for (i, &(k, v)) in ATTENTION_DIMS.iter().enumerate() {
        let spec = KernelSpec::attention_decode(k, v, dtype, Arch::Sm80);
        check_attention_cases(&spec, 500 + i as u64 * 10);
    }
}

#[test]
fn attention_any_head_dims_match_the_reference_f32() {
    attention_dims_in(Dtype::F32);
}

#[test]
fn attention_any_head_dims_match_the_reference_f16() {
    attention_dims_in(Dtype::F16);
}

#[test]
fn attention_any_head_dims_match_the_reference_bf16() {
    attention_dims_in(Dtype::Bf16);
}

#[test]
fn attention_tails_with_other_tiles_match_the_reference() {
    // Few threads (q staged in several passes, few warps to merge) and one token per group
    // per step, with odd dims.
    for (k, v, threads, rows_per_step) in [(255, 60, 64, 1), (7, 200, 128, 4), (100, 33, 64, 2)] {
        for dtype in [Dtype::F32, Dtype::F16] {
            let spec = KernelSpec {
                tile: TileConfig {
                    threads,
                    rows_per_step,
                },
                ..KernelSpec::attention_decode(k, v, dtype, Arch::Sm90)
            };
            check_attention_cases(&spec, u64::from(k * 1000 + v));
        }
    }
}

/// Global bytes of both passes ≤ 1.1 × the minimum N·H·[(K + L·(K + V) + V)·e] (q and the
/// cache read once, o written once) + N·H·splits·(V + 2)·4·2 (each split's õ, m and l
/// written once and read once) + N·H·(splits − 1)·K·e (every split CTA reads q), as the
/// catalog's traffic test holds: narrow pieces and masked lanes read no byte twice.
#[test]
fn attention_tails_read_the_kv_cache_once() {
    let (n, h, context, split_len) = (2u64, 2u64, 1000u32, 256u32);
    for (k, v, dtype) in [
        (60u32, 100u32, Dtype::Bf16),
        (100, 60, Dtype::F32),
        (33, 200, Dtype::F16),
        (200, 33, Dtype::F32),
    ] {
        let spec = KernelSpec::attention_decode(k, v, dtype, Arch::Sm90);
        let (plan, moved) = check_attention(&spec, context, Some(split_len), SCALE, 77);
        assert_eq!(plan.splits, 4);
        let e = dtype.size_bytes() as u64;
        let (kk, vv, l, s) = (
            u64::from(k),
            u64::from(v),
            u64::from(context),
            u64::from(plan.splits),
        );
        let minimum = n * h * (kk + l * (kk + vv) + vv) * e
            + n * h * s * (vv + 2) * 4 * 2
            + n * h * (s - 1) * kk * e;
        let ratio = moved as f64 / minimum as f64;
        eprintln!("{spec}: {moved} B moved, {ratio:.4} x the minimum");
        assert!(
            (1.0..=1.1).contains(&ratio),
            "{spec}: {ratio:.3} x the minimum"
        );
    }
}

#[test]
fn attention_partials_are_padded_to_16_byte_rows() {
    for v in [1, 7, 33, 60, 64, 510] {
        let spec = KernelSpec::attention_decode(16, v, Dtype::Bf16, Arch::Sm80);
        let floats = partial_row_floats(&spec);
        assert_eq!(floats % 4, 0, "V={v}");
        assert!(floats >= v + 4 && floats < v + 8, "V={v}");
        let p = plan_with_split_len(&spec, 1, 2, 100, 10).unwrap();
        assert_eq!(p.partial_floats, 2 * 10 * u64::from(floats));
    }
}

#[test]
fn attention_rejects_dims_past_the_maxima_with_typed_errors() {
    for (k, v, what) in [
        (0, 64, "head dim K"),
        (257, 64, "head dim K"),
        (64, 0, "head dim V"),
        (64, 513, "head dim V"),
    ] {
        let spec = KernelSpec::attention_decode(k, v, Dtype::F16, Arch::Sm80);
        for pass in [spec, spec.attention_combine()] {
            assert!(matches!(
                pass.op,
                KernelOp::AttentionDecode | KernelOp::AttentionCombine
            ));
            match emit_ptx(&pass) {
                Err(GenError::UnsupportedSpec { what: w, .. }) => assert_eq!(w, what, "{k} {v}"),
                other => panic!("{pass}: expected UnsupportedSpec, got {other:?}"),
            }
        }
    }
}

/// ptxas (when installed) assembles both passes of sampled new dims for both archs with
/// zero spills.
#[test]
fn attention_sampled_dims_assemble_without_spills() {
    let specs = SAMPLED.iter().enumerate().flat_map(|(i, &(k, v))| {
        Arch::ALL.into_iter().flat_map(move |arch| {
            let dtype = Dtype::ALL[i % Dtype::ALL.len()];
            let spec = KernelSpec::attention_decode(k, v, dtype, arch);
            [spec, spec.attention_combine()]
        })
    });
    assemble_without_spills(&specs.collect::<Vec<_>>());
}

/// Every K in 1..=256 (against a few V) and every V in 1..=512 (against a few K) validates,
/// emits PTX the emulator parses (only instructions it supports), and launches with a grid
/// that covers V — both families, the dtype cycling with the shape.
#[test]
fn every_head_dim_emits_parseable_ptx() {
    let shapes = (1..=256u32)
        .flat_map(|k| [1, 100, 510].map(|v| (k, v)))
        .chain((1..=512u32).flat_map(|v| [7, 256].map(|k| (k, v))));
    for (k, v) in shapes {
        let dtype = Dtype::ALL[((k + v) % 3) as usize];
        let gammas = if (k + v) % 2 == 0 {
            GammaSet::Retnet { heads: 4 }
        } else {
            GammaSet::Runtime
        };
        let dec = KernelSpec::decode(k, v, gammas, dtype, Arch::Sm80);
        let att = KernelSpec::attention_decode(k, v, dtype, Arch::Sm90);
        for spec in [dec, att, att.attention_combine()] {
            let ptx = emit_ptx(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            Module::parse(&ptx).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        let g = launch_geometry(&dec, 1, 4).unwrap();
        assert!(g.grid[2] * value_slice(&dec) >= v, "{dec}");
        let p = plan(&att, 1, 4, 1000).unwrap();
        assert_eq!(
            p.partial_floats,
            4 * u64::from(p.splits) * u64::from(partial_row_floats(&att)) * u64::from(p.splits > 1)
        );
    }
}
