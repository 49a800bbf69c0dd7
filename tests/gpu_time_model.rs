//! The emulator's time model against every GPU time measured so far
//! (`ptx-emu/data/measured_h100.json`): each row's kernel is emulated on a small
//! representative problem, its per-CTA counters are scaled to the measured shape (chunkwise:
//! affine in the chunks each CTA walks; attention: the split pass at the planned split
//! length, the combine affine in splits; every kind: CTAs × rows × heads), and the H100
//! model's *prediction* must lie within 1.5× of the measurement. Rows the table marks
//! `excluded` say why they are not checked.

use std::collections::HashMap;
use std::sync::Mutex;

use kernel_gen::emu::{EmuReport, H100_MODEL, Launch, Workload};
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec};
use kernel_gen::{attention_decode_plan, decode_variant};
use retention_check as checks;
use retention_check::attention::Case;
use retention_check::two_phase::TwoPhaseCase;
use retention_core::{Dtype, Result};
use retention_runtime::launch_target::{Emulator, LaunchReport, LaunchTarget};
use serde_json::Value;

/// The emulator, keeping every launch's report.
struct Recorder(Mutex<Vec<EmuReport>>);

impl Recorder {
    fn new() -> Self {
        Recorder(Mutex::new(Vec::new()))
    }

    fn take(&self) -> Vec<EmuReport> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl LaunchTarget for Recorder {
    fn execute(&self, spec: &KernelSpec, launch: &mut Launch) -> Result<LaunchReport> {
        let report = Emulator(spec.arch).execute(spec, launch)?;
        if let Some(r) = report.emulated() {
            self.0.lock().unwrap().push(r.clone());
        }
        Ok(report)
    }

    fn arch(&self) -> Arch {
        Arch::Sm90
    }
}

fn dtype(name: &str) -> Dtype {
    match name {
        "bf16" => Dtype::Bf16,
        "f16" => Dtype::F16,
        "f32" => Dtype::F32,
        other => panic!("unknown dtype {other}"),
    }
}

fn num(row: &Value, key: &str) -> u32 {
    row[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {row}"))
        .try_into()
        .unwrap()
}

/// One decode step of `batch` rows on `heads` heads: the catalog check's launch (2 rows of
/// the named γ set's heads) of the variant the runtime picks for the batch, its CTAs scaled
/// to the row count.
fn decode_workload(row: &Value, registers: &Value) -> Workload {
    let (heads, dk, dv, batch) = (
        num(row, "heads"),
        num(row, "dk"),
        num(row, "dv"),
        num(row, "batch"),
    );
    // The variant the runtime launches for this batch (its value slice).
    let spec = decode_variant(
        &KernelSpec::decode(
            dk,
            dv,
            GammaSet::Retnet { heads },
            dtype(row["dtype"].as_str().unwrap()),
            Arch::Sm90,
        ),
        batch,
        heads,
    );
    let recorder = Recorder::new();
    checks::decode::check(&spec, &recorder, 11).unwrap();
    let first = recorder.take().remove(0);
    let (rows, _) = checks::decode::problem_size(&spec);
    let w = with_ptxas_registers(Workload::from_report(&first), &spec, registers);
    w.with_ctas(w.ctas / rows as f64 * f64::from(batch))
}

/// The one-pass chunkwise forward: one row and one head at 2 and 3 chunks, extrapolated to
/// the measured chunks per CTA, CTAs scaled to rows × heads. Runtime γ stands in for the
/// named set (the same kernel body; only where log2 γ is read from differs).
fn chunkwise_workload(
    row: &Value,
    registers: &Value,
    cache: &mut HashMap<String, (Workload, Workload)>,
) -> Workload {
    let (c, dk, dv) = (num(row, "chunk"), num(row, "dk"), num(row, "dv"));
    let spec = KernelSpec::chunkwise(
        dk,
        dv,
        c,
        GammaSet::Runtime,
        dtype(row["dtype"].as_str().unwrap()),
        Arch::Sm90,
    );
    let (a, b) = *cache.entry(spec.slug()).or_insert_with(|| {
        let recorder = Recorder::new();
        let at = |chunks: u32| {
            checks::chunkwise::check_on(&spec, &recorder, (1, 1, (chunks * c) as usize), 21)
                .unwrap();
            Workload::from_report(&recorder.take().remove(0))
        };
        (at(2), at(3))
    });
    let chunks = f64::from(num(row, "seq_len").div_ceil(c));
    let rows_heads = f64::from(num(row, "batch") * num(row, "heads"));
    let w = Workload::affine(&a, 2.0, &b, 3.0, chunks).with_ctas(b.ctas * rows_heads);
    with_ptxas_registers(w, &spec, registers)
}

/// `w` with ptxas's register count for `spec` from the table (the emulator's own estimate
/// when the table has none).
fn with_ptxas_registers(w: Workload, spec: &KernelSpec, registers: &Value) -> Workload {
    match registers[spec.slug()].as_u64() {
        Some(r) => Workload {
            resources: w.resources.with_registers(r as u32),
            ..w
        },
        None => w,
    }
}

/// The two-phase forward (chunk states, then segments), both launches: one row and one
/// head cut into the measured number of segments S, at 2 and 3 chunks per segment,
/// extrapolated to L / C chunks per segment (phase 2's fold of earlier segment states
/// depends on S, which is the measured one); CTAs scaled to rows × heads. The small
/// problem's last segment is full where the measured one may end short.
fn two_phase_workloads(
    row: &Value,
    registers: &Value,
    cache: &mut HashMap<String, [Workload; 4]>,
) -> Vec<Workload> {
    let (c, dk, dv, t, len) = (
        num(row, "chunk"),
        num(row, "dk"),
        num(row, "dv"),
        num(row, "seq_len"),
        num(row, "segment_len"),
    );
    let segments = t.div_ceil(len);
    let spec = KernelSpec::chunkwise(
        dk,
        dv,
        c,
        GammaSet::Runtime,
        dtype(row["dtype"].as_str().unwrap()),
        Arch::Sm90,
    )
    .with_op(KernelOp::ChunkwiseSegmented);
    let states = checks::two_phase::partner(&spec).unwrap();
    let key = format!("{} S={segments}", spec.slug());
    let [p1a, p2a, p1b, p2b] = *cache.entry(key).or_insert_with(|| {
        let recorder = Recorder::new();
        let at = |chunks: u32| {
            let case = TwoPhaseCase {
                batch: 1,
                heads: 1,
                t: (segments * chunks * c) as usize,
                segment_len: (chunks * c) as usize,
                with_h0: false,
                want_ht: true,
            };
            checks::two_phase::check_case((&states, &recorder), (&spec, &recorder), case, 31)
                .unwrap();
            let reports = recorder.take();
            let find = |entry: &str| {
                Workload::from_report(reports.iter().find(|r| r.kernel == entry).unwrap())
            };
            (find(&states.entry()), find(&spec.entry()))
        };
        let (a, b) = (at(2), at(3));
        [a.0, a.1, b.0, b.1]
    });
    let chunks = f64::from(len / c);
    let rows_heads = f64::from(num(row, "batch") * num(row, "heads"));
    [(states, p1a, p1b), (spec, p2a, p2b)]
        .into_iter()
        .map(|(s, a, b)| {
            let w = Workload::affine(&a, 2.0, &b, 3.0, chunks).with_ctas(b.ctas * rows_heads);
            with_ptxas_registers(w, &s, registers)
        })
        .collect()
}

/// Attention decode over a KV cache of `context` tokens as the plan splits it: the split
/// pass emulated for one (row, head) at the planned split length (its CTAs are alike), the
/// combine at 2 and 3 splits extrapolated to the planned count; CTAs as planned.
fn attention_workloads(row: &Value, registers: &Value) -> Vec<Workload> {
    let (heads, dk, dv, batch, context) = (
        num(row, "heads"),
        num(row, "dk"),
        num(row, "dv"),
        num(row, "batch"),
        num(row, "context"),
    );
    let spec =
        KernelSpec::attention_decode(dk, dv, dtype(row["dtype"].as_str().unwrap()), Arch::Sm90);
    let plan = attention_decode_plan(&spec, batch, heads, context).unwrap();
    let ctas = |g: [u32; 3]| g.iter().map(|&x| f64::from(x)).product::<f64>();
    let recorder = Recorder::new();
    let at = |splits: u32| {
        let case = Case {
            context: splits * plan.split_len,
            split_len: Some(plan.split_len),
            scale: 0.3,
        };
        let run =
            checks::attention::run_case(&spec, &recorder, &recorder, (1, 1), case, 41).unwrap();
        recorder.take();
        (
            Workload::from_report(run.split.emulated().unwrap()),
            Workload::from_report(run.combine.unwrap().emulated().unwrap()),
        )
    };
    let ((split, combine_a), (_, combine_b)) = (at(2), at(3));
    let mut out = vec![with_ptxas_registers(
        split.with_ctas(ctas(plan.split.grid)),
        &spec,
        registers,
    )];
    if let Some(g) = plan.combine {
        let w = Workload::affine(&combine_a, 2.0, &combine_b, 3.0, f64::from(plan.splits));
        out.push(with_ptxas_registers(
            w.with_ctas(ctas(g.grid)),
            &spec.attention_combine(),
            registers,
        ));
    }
    out
}

#[test]
fn h100_model_predicts_every_measured_row_within_1_5x() {
    let table: Value = serde_json::from_str(include_str!("../ptx-emu/data/measured_h100.json"))
        .expect("the measured table parses");
    let registers = &table["ptxas_sm_90_registers"];
    let mut cache = HashMap::new();
    let mut two_phase_cache = HashMap::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for row in table["rows"].as_array().unwrap() {
        let id = row["id"].as_str().unwrap();
        let measured = row["measured_seconds"].as_f64().unwrap();
        if let Some(reason) = row["excluded"].as_str() {
            println!(
                "{id:28} measured {:>10.1} us  excluded: {reason}",
                measured * 1e6
            );
            continue;
        }
        let launches = match row["kind"].as_str().unwrap() {
            "decode" => vec![decode_workload(row, registers)],
            "chunkwise" => vec![chunkwise_workload(row, registers, &mut cache)],
            "two_phase" => two_phase_workloads(row, registers, &mut two_phase_cache),
            "attention_decode" => attention_workloads(row, registers),
            other => panic!("{id}: kind {other} has no predictor and is not excluded"),
        };
        // The first launch's breakdown; the time is every launch's, one after another.
        let p = H100_MODEL.predict(&launches[0]);
        let seconds = H100_MODEL.predict_sequence(&launches);
        let ratio = seconds / measured;
        println!(
            "{id:28} measured {:>10.1} us  predicted H100 {:>10.1} us  ratio {ratio:5.2}  \
             {:?}, {} CTAs/SM, {:.2} waves, compute {:.1} us, memory {:.1} us",
            measured * 1e6,
            seconds * 1e6,
            p.bound,
            p.ctas_per_sm,
            p.waves,
            p.compute_seconds * 1e6,
            p.memory_seconds * 1e6
        );
        for w in &launches[1..] {
            let q = H100_MODEL.predict(w);
            println!(
                "{:28} then {:>10.1} us: {:?}, {} CTAs/SM, {:.2} waves, compute {:.1} us, memory {:.1} us",
                "",
                q.seconds * 1e6,
                q.bound,
                q.ctas_per_sm,
                q.waves,
                q.compute_seconds * 1e6,
                q.memory_seconds * 1e6
            );
        }
        checked += 1;
        if !(1.0 / 1.5..=1.5).contains(&ratio) {
            failures.push(format!("{id}: predicted/measured = {ratio:.2}"));
        }
    }
    // 33 rows until the decode kernel of branch speed18 replaced the one its 7 decode rows
    // measured (they stay in the table, excluded, until remeasured on a GPU).
    assert!(checked >= 26, "only {checked} rows checked");
    assert!(failures.is_empty(), "outside 1.5x: {failures:?}");
}

/// The scaling the table test relies on, checked against a direct emulation: counters of one
/// head at 2 and 3 chunks, extrapolated to 6 chunks and given 4 heads' CTAs, equal the
/// per-CTA counters of emulating 4 heads at 6 chunks, and so does the prediction.
#[test]
fn scaled_small_runs_match_a_direct_emulation() {
    let spec = KernelSpec::chunkwise(64, 64, 64, GammaSet::Runtime, Dtype::Bf16, Arch::Sm90);
    let recorder = Recorder::new();
    let at = |heads: usize, chunks: usize| {
        checks::chunkwise::check_on(&spec, &recorder, (1, heads, chunks * 64), 5).unwrap();
        Workload::from_report(&recorder.take().remove(0))
    };
    let (a, b) = (at(1, 2), at(1, 3));
    let direct = at(4, 6);
    let scaled = Workload::affine(&a, 2.0, &b, 3.0, 6.0).with_ctas(b.ctas * 4.0);
    assert_eq!(scaled.ctas, direct.ctas);
    assert_eq!(scaled.resources, direct.resources);
    for (name, s, d) in [
        ("issue", scaled.issue, direct.issue),
        ("mma", scaled.mma, direct.mma),
        ("shared", scaled.shared_wavefronts, direct.shared_wavefronts),
        ("dram", scaled.dram_bytes, direct.dram_bytes),
        ("rounds", scaled.rounds, direct.rounds),
    ] {
        assert!(
            (s - d).abs() <= 1e-9 * d.max(1.0),
            "{name}: scaled {s} vs direct {d}"
        );
    }
    let (p, q) = (H100_MODEL.predict(&scaled), H100_MODEL.predict(&direct));
    assert!((p.seconds / q.seconds - 1.0).abs() < 1e-9);
}
