//! Every decode-step variant of the catalog, run as emitted PTX in the emulator, matches the
//! f64 reference: f32 outputs ≤ 1e-5 relative, f16/bf16 outputs relative RMSE ≤ 5e-3, the f32
//! state ≤ 1e-5 relative, untouched slots bit-identical.
//!
//! CI runs a fixed subset that touches every (K, V), dtype and gamma set (every spec whose
//! emulated work is under a budget, which keeps all runtime-γ shapes and the small shapes of
//! every named set); `RETENTION_FULL_SWEEP=1` runs the whole catalog.

use half::{bf16, f16};
use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Module, Param};
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, catalog, emit_ptx, launch_geometry};
use retention_core::{Dtype, Element, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};

/// Emulated state elements (rows × heads × K × V) a spec may cost in the CI sample.
const CI_BUDGET: usize = 800_000;
const SCALE: f64 = 0.37;

/// Rows and heads one spec is exercised with.
fn problem_size(spec: &KernelSpec) -> (usize, usize) {
    match spec.gammas {
        GammaSet::Retnet { heads } => (2, heads as usize),
        GammaSet::Runtime => (3, 2),
    }
}

fn gammas_for(spec: &KernelSpec, heads: usize) -> Gammas {
    match spec.gammas {
        GammaSet::Retnet { heads } => Gammas::retnet(heads as usize).unwrap(),
        // A fast head and one so slow that γ rounds to 1 in f32 (only log2 γ can carry it).
        GammaSet::Runtime => {
            let mut g = vec![0.3, 1.0 - 2f64.powi(-30)];
            g.truncate(heads);
            Gammas::from_list(g).unwrap()
        }
    }
}

fn input_buffer(dtype: Dtype, values: &[f64]) -> Buffer {
    match dtype {
        Dtype::F32 => Buffer::from_f32(&values.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        Dtype::F16 => Buffer::from_f16(
            &values
                .iter()
                .map(|&x| <f16 as Element>::from_f64(x))
                .collect::<Vec<_>>(),
        ),
        Dtype::Bf16 => Buffer::from_bf16(
            &values
                .iter()
                .map(|&x| <bf16 as Element>::from_f64(x))
                .collect::<Vec<_>>(),
        ),
    }
}

fn output_values(dtype: Dtype, buf: &Buffer) -> Vec<f64> {
    match dtype {
        Dtype::F32 => buf.to_f32().into_iter().map(f64::from).collect(),
        Dtype::F16 => buf
            .to_u16()
            .into_iter()
            .map(|b| f16::from_bits(b).to_f64())
            .collect(),
        Dtype::Bf16 => buf
            .to_u16()
            .into_iter()
            .map(|b| bf16::from_bits(b).to_f64())
            .collect(),
    }
}

fn emu_dtype(dtype: Dtype) -> EmuDtype {
    match dtype {
        Dtype::F32 => EmuDtype::F32,
        Dtype::F16 => EmuDtype::F16,
        Dtype::Bf16 => EmuDtype::Bf16,
    }
}

/// Run `steps` decode steps of `spec` in the emulator and in the reference; assert they agree.
fn check_spec(spec: &KernelSpec, module: &Module, seed: u64) {
    let (n, h) = problem_size(spec);
    let (k, v) = (spec.k as usize, spec.v as usize);
    let gammas = gammas_for(spec, h);
    let params = RetentionParams::new(gammas.clone(), Some(SCALE));
    let capacity = n + 3;
    // Rows live in scrambled slots; the others must stay untouched.
    let slots: Vec<usize> = (0..n).map(|r| (capacity - 1 + 2 * r) % capacity).collect();
    let mut rng = SplitMix64::new(seed);
    let pool0: Vec<f64> = rng
        .vec(capacity * h * k * v)
        .iter()
        .map(|x| f64::from(*x as f32))
        .collect();
    let mut ref_pool = HostTensor::new(vec![capacity, h, k, v], pool0.clone()).unwrap();
    let mut emu_pool =
        Buffer::from_f32(&pool0.iter().map(|&x| x as f32).collect::<Vec<_>>()).output();
    let geometry = launch_geometry(spec, n as u32, h as u32).unwrap();
    for step in 0..2 {
        // Inputs rounded to the dtype: the reference sees exactly what the kernel reads.
        let round = |xs: Vec<f64>| {
            xs.into_iter()
                .map(|x| spec.dtype.round(x))
                .collect::<Vec<_>>()
        };
        let q = round(rng.vec(n * h * k));
        let kk = round(rng.vec(n * h * k));
        let vv = round(rng.vec(n * h * v));
        let t = |shape: Vec<usize>, d: &[f64]| HostTensor::new(shape, d.to_vec()).unwrap();
        let want = reference::decode_step(
            &t(vec![n, h, k], &q),
            &t(vec![n, h, k], &kk),
            &t(vec![n, h, v], &vv),
            &mut ref_pool,
            &slots,
            &params,
        )
        .unwrap();
        let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
            .dynamic_shared(geometry.dynamic_smem_bytes)
            .arg(Param::Buffer(input_buffer(spec.dtype, &q)))
            .arg(Param::Buffer(input_buffer(spec.dtype, &kk)))
            .arg(Param::Buffer(input_buffer(spec.dtype, &vv)))
            .arg(Param::Buffer(emu_pool.clone()))
            .arg(Param::Buffer(Buffer::from_u32(
                &slots.iter().map(|&s| s as u32).collect::<Vec<_>>(),
            )))
            .arg(Param::Buffer(
                Buffer::zeros(emu_dtype(spec.dtype), n * h * v).output(),
            ))
            .arg(Param::U32(n as u32))
            .arg(Param::F32(SCALE as f32));
        if spec.gammas == GammaSet::Runtime {
            let log2g: Vec<f32> = (0..h).map(|i| gammas.log2(i) as f32).collect();
            launch = launch
                .arg(Param::U32(h as u32))
                .arg(Param::Buffer(Buffer::from_f32(&log2g)));
        }
        module
            .launch(&mut launch)
            .unwrap_or_else(|e| panic!("{} step {step}: {e}", spec.slug()));
        emu_pool = launch.buffer(3).unwrap().clone();
        let got = output_values(spec.dtype, launch.buffer(5).unwrap());
        let what = format!("{} step {step}", spec.slug());
        match spec.dtype {
            Dtype::F32 => {
                let err = reference::max_rel_diff(&got, want.data());
                assert!(err <= 1e-5, "{what}: o max rel diff {err:e}");
            }
            Dtype::F16 | Dtype::Bf16 => {
                let err = reference::rel_rmse(&got, want.data());
                assert!(err <= 5e-3, "{what}: o rel RMSE {err:e}");
            }
        }
        let state: Vec<f64> = emu_pool.to_f32().into_iter().map(f64::from).collect();
        let sl = h * k * v;
        for slot in 0..capacity {
            let (a, b) = (
                &state[slot * sl..(slot + 1) * sl],
                &ref_pool.data()[slot * sl..(slot + 1) * sl],
            );
            if slots.contains(&slot) {
                let err = reference::max_rel_diff(a, b);
                assert!(
                    err <= 1e-5,
                    "{what}: state of slot {slot} max rel diff {err:e}"
                );
            } else {
                assert_eq!(a, b, "{what}: untouched slot {slot} changed");
            }
        }
    }
}

fn cost(spec: &KernelSpec) -> usize {
    let (n, h) = problem_size(spec);
    n * h * spec.k as usize * spec.v as usize
}

/// PTX text after the `.target` line, which is all that can differ between archs' bodies.
fn body(ptx: &str) -> String {
    ptx.lines()
        .filter(|l| {
            !l.trim_start().starts_with(".target") && !l.trim_start().starts_with(".version")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_decode_variant_matches_the_reference_in_the_emulator() {
    let full = std::env::var_os("RETENTION_FULL_SWEEP").is_some();
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.op == KernelOp::Decode)
        .collect();
    let mut ran = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if !full && cost(spec) > CI_BUDGET {
            continue;
        }
        let ptx = emit_ptx(spec).unwrap();
        if spec.arch != Arch::ALL[0] && !full {
            // Another arch: emulate only when its body differs from the first arch's.
            let mut twin = *spec;
            twin.arch = Arch::ALL[0];
            if body(&emit_ptx(&twin).unwrap()) == body(&ptx) {
                continue;
            }
        }
        let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        check_spec(spec, &module, 1000 + i as u64);
        ran.push(*spec);
    }
    // The sample touches every (K, V), every dtype and every gamma set.
    for spec in &specs {
        assert!(
            ran.iter().any(|r| (r.k, r.v) == (spec.k, spec.v)),
            "no run for K={} V={}",
            spec.k,
            spec.v
        );
        assert!(ran.iter().any(|r| r.dtype == spec.dtype));
        assert!(
            ran.iter().any(|r| r.gammas == spec.gammas),
            "no run for {}",
            spec.gammas.name()
        );
    }
    println!("emulated {} of {} decode variants", ran.len(), specs.len());
}

#[test]
fn every_catalog_ptx_parses_with_supported_instructions_only() {
    for spec in catalog::default_catalog() {
        let ptx = emit_ptx(&spec).unwrap();
        let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        assert!(
            module.entries().contains(&spec.entry().as_str()),
            "{}",
            spec.slug()
        );
    }
}
