//! The softmax-attention KV-cache decode baseline (split pass + combine), run as emitted PTX
//! in the emulator, matches the f64 reference (`retention_check::attention`,
//! the check `retention verify` runs): f32 ≤ 1e-5 max relative error, f16/bf16 relative
//! RMSE ≤ 5e-3, for L = 1, L = 7 (huge logits), a context over several splits whose last split
//! is partial, and a split length that is not a multiple of the CTA step.
//!
//! CI runs a fixed sample that covers every head dim and every dtype on the first arch (the
//! other arch's PTX bodies are identical); `RETENTION_FULL_SWEEP=1` runs every catalog spec.
//! A second test holds the global traffic to the algorithmic minimum.

use kernel_gen::emu::Module;
use kernel_gen::kernels::attention_decode::{PARTIAL_HEADER, plan_with_split_len};
use kernel_gen::{Arch, KernelOp, KernelSpec, catalog, emit_ptx};
use retention_check::attention::{self, Case};
use retention_core::Dtype;

fn module(spec: &KernelSpec) -> Module {
    Module::parse(&emit_ptx(spec).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()))
}

/// The CI sample: every (K, V) once and every dtype once, on the first arch, f32 where the
/// shape is cheap — a fixed diagonal through the catalog.
fn in_ci_sample(spec: &KernelSpec) -> bool {
    let dims = catalog::ATTENTION_HEAD_DIMS;
    let i = dims.iter().position(|&d| d == (spec.k, spec.v)).unwrap();
    spec.arch == Arch::ALL[0] && Dtype::ALL[i % Dtype::ALL.len()] == spec.dtype
}

#[test]
fn attention_decode_matches_the_reference_in_the_emulator() {
    let full = std::env::var_os("RETENTION_FULL_SWEEP").is_some();
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.op == KernelOp::AttentionDecode)
        .collect();
    let mut ran = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if !full && !in_ci_sample(spec) {
            continue;
        }
        let check = attention::check(spec, &module(spec), 3000 + i as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        if let Some(why) = check.failure(spec.dtype) {
            panic!("{}: {why}", spec.slug());
        }
        println!("{}: error {:.2e}", spec.slug(), check.o_error);
        ran.push(*spec);
    }
    for spec in &specs {
        assert!(ran.iter().any(|r| (r.k, r.v) == (spec.k, spec.v)));
        assert!(ran.iter().any(|r| r.dtype == spec.dtype));
    }
}

/// Global bytes of both passes ≤ 1.1 × the minimum, where the minimum is
/// N·H·[(K + L·(K + V)) · e + V · e] (q read, the KV cache read once, o written; e the element
/// size) + N·H·splits·(V + 2)·4·2 (each split's õ, m and l written once and read once, f32)
/// + N·H·(splits − 1)·K·e (every split CTA needs q).
#[test]
fn attention_decode_reads_the_kv_cache_once() {
    let (n, h) = (1usize, 2usize);
    for (k, v, dtype) in [
        (128u32, 128u32, Dtype::Bf16),
        (256, 512, Dtype::F32),
        (64, 64, Dtype::F16),
    ] {
        let spec = KernelSpec::attention_decode(k, v, dtype, Arch::Sm90);
        let context = 1000u32;
        let split_len = 256u32;
        let case = Case {
            context,
            split_len: Some(split_len),
            scale: 0.3,
        };
        let run = attention::run_case(
            &spec,
            &module(&spec),
            &module(&spec.attention_combine()),
            (n, h),
            case,
            77,
        )
        .unwrap();
        assert!(run.o_error < 5e-3, "{}: error {}", spec.slug(), run.o_error);
        let plan = plan_with_split_len(&spec, n as u32, h as u32, context, split_len).unwrap();
        assert_eq!(plan.splits, 4);
        let combine = run.combine.as_ref().expect("four splits need the combine");
        let combine = combine.emulated().unwrap();
        let split = run.split.emulated().unwrap();
        let e = dtype.size_bytes() as u64;
        let (nh, kk, vv, l, s) = (
            (n * h) as u64,
            u64::from(k),
            u64::from(v),
            u64::from(context),
            u64::from(plan.splits),
        );
        let minimum =
            nh * (kk + l * (kk + vv) + vv) * e + nh * s * (vv + 2) * 4 * 2 + nh * (s - 1) * kk * e;
        let moved = split.global_bytes_read
            + split.global_bytes_written
            + combine.global_bytes_read
            + combine.global_bytes_written;
        let ratio = moved as f64 / minimum as f64;
        println!(
            "{}: {moved} B moved, minimum {minimum} B, ratio {ratio:.4}; split pass {:.2} \
             sectors/request, partial row {} f32",
            spec.slug(),
            split.sectors_per_request,
            v + PARTIAL_HEADER
        );
        assert!(ratio <= 1.1, "{}: {ratio:.3} x the minimum", spec.slug());
        assert!(ratio >= 1.0, "{}: below the minimum?", spec.slug());
    }
}
