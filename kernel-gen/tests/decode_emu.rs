//! The decode kernel run in the PTX emulator against an f64 evaluation of
//! S ← γS + kᵀv, o = s·q·S (quick self-check of the generator; the workspace's own
//! cross-backend tests compare against `retention_kernels::reference`).

use half::{bf16, f16};
use kernel_gen::emu::{Buffer, Dtype as EmuDtype, EmuReport, Launch, Module, Param};
use kernel_gen::kernels::decode::value_slice;
use kernel_gen::{Arch, GammaSet, KernelSpec, emit_ptx, launch_geometry};
use retention_core::{Dtype, Gammas, SplitMix64};

struct Case {
    spec: KernelSpec,
    gammas: Gammas,
    rows: usize,
    slots: Vec<u32>,
    pool_slots: usize,
    scale: f32,
}

fn dtype_buffer(dtype: Dtype, x: &[f64]) -> Buffer {
    match dtype {
        Dtype::F32 => Buffer::from_f32(&x.iter().map(|&v| v as f32).collect::<Vec<_>>()),
        Dtype::F16 => Buffer::from_f16(&x.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>()),
        Dtype::Bf16 => Buffer::from_bf16(&x.iter().map(|&v| bf16::from_f64(v)).collect::<Vec<_>>()),
    }
}

fn read_dtype(dtype: Dtype, b: &Buffer) -> Vec<f64> {
    match dtype {
        Dtype::F32 => b.to_f32().into_iter().map(f64::from).collect(),
        Dtype::F16 => b
            .to_u16()
            .into_iter()
            .map(|u| f16::from_bits(u).to_f64())
            .collect(),
        Dtype::Bf16 => b
            .to_u16()
            .into_iter()
            .map(|u| bf16::from_bits(u).to_f64())
            .collect(),
    }
}

fn run(case: &Case) -> EmuReport {
    let s = &case.spec;
    let (h_n, k_n, v_n, n_n) = (case.gammas.len(), s.k as usize, s.v as usize, case.rows);
    let mut rng = SplitMix64::new(7 + s.hash64());
    // Inputs rounded to the dtype once, so the f64 evaluation sees what the kernel sees.
    let round = |x: Vec<f64>| x.into_iter().map(|v| s.dtype.round(v)).collect::<Vec<_>>();
    let q = round(rng.vec(n_n * h_n * k_n));
    let k = round(rng.vec(n_n * h_n * k_n));
    let v = round(rng.vec(n_n * h_n * v_n));
    let pool: Vec<f32> = rng
        .vec(case.pool_slots * h_n * k_n * v_n)
        .iter()
        .map(|&x| x as f32)
        .collect();

    let ptx = emit_ptx(s).unwrap();
    let module = Module::parse(&ptx).unwrap();
    let geo = launch_geometry(s, n_n as u32, h_n as u32).unwrap();
    assert_eq!(geo.dynamic_smem_bytes, 0);
    let mut launch = Launch::new(s.entry(), geo.grid, geo.block)
        .arg(Param::Buffer(dtype_buffer(s.dtype, &q)))
        .arg(Param::Buffer(dtype_buffer(s.dtype, &k)))
        .arg(Param::Buffer(dtype_buffer(s.dtype, &v)))
        .arg(Param::Buffer(Buffer::from_f32(&pool).output()))
        .arg(Param::Buffer(Buffer::from_u32(&case.slots)))
        .arg(Param::Buffer(Buffer::zeros(
            match s.dtype {
                Dtype::F32 => EmuDtype::F32,
                Dtype::F16 => EmuDtype::F16,
                Dtype::Bf16 => EmuDtype::Bf16,
            },
            n_n * h_n * v_n,
        )))
        .arg(Param::U32(n_n as u32))
        .arg(Param::F32(case.scale));
    if s.gammas == GammaSet::Runtime {
        let log2: Vec<f32> = (0..h_n).map(|h| case.gammas.log2(h) as f32).collect();
        launch = launch
            .arg(Param::U32(h_n as u32))
            .arg(Param::Buffer(Buffer::from_f32(&log2)));
    }
    let report = module.launch(&mut launch).unwrap();
    let new_pool = launch.buffer(3).unwrap().to_f32();
    let o = read_dtype(s.dtype, launch.buffer(5).unwrap());

    // Every state element written exactly once and o once: nothing more leaves the kernel.
    let esize = s.dtype.size_bytes();
    assert_eq!(
        report.global_bytes_written as usize,
        n_n * h_n * (k_n * v_n * 4 + v_n * esize)
    );

    // Every CTA (n, h, z) owns W state columns: it reads its state slice and v slice once,
    // stages all of q and k (the V / W - 1 extra copies per row and head are the price of
    // the split), and thread 0 reads the row's slot (and, runtime γ, log2 γ_h).
    let slices = v_n / value_slice(s) as usize;
    let per_cta_scalars = if s.gammas == GammaSet::Runtime { 8 } else { 4 };
    let staging = n_n * h_n * (slices - 1) * 2 * k_n * esize;
    assert_eq!(geo.grid, [n_n as u32, h_n as u32, slices as u32]);
    assert_eq!(
        report.global_bytes_read as usize,
        n_n * h_n * (4 * k_n * v_n + (2 * k_n + v_n) * esize + slices * per_cta_scalars) + staging,
        "{s}"
    );

    // ARCHITECTURE §5 targets: at most 1.15x the algorithmic minimum of global bytes (f32 state
    // read and written once, q, k, v read and o written once) plus the per-slice q/k
    // staging, no shared bank conflicts.
    let minimum = n_n * h_n * (8 * k_n * v_n + (2 * k_n + 2 * v_n) * esize);
    let moved = (report.global_bytes_read + report.global_bytes_written) as usize;
    assert!(
        moved as f64 <= 1.15 * (minimum + staging) as f64,
        "{s}: {moved} bytes moved, minimum {minimum} + q/k staging {staging}"
    );
    assert_eq!(report.shared_bank_conflicts, 0, "{s}");

    let out_ulp = match s.dtype {
        Dtype::F32 => 2f64.powi(-24),
        Dtype::F16 => 2f64.powi(-11),
        Dtype::Bf16 => 2f64.powi(-8),
    };
    let mut touched = vec![false; case.pool_slots];
    for n in 0..n_n {
        let slot = case.slots[n] as usize;
        touched[slot] = true;
        for h in 0..h_n {
            let g = case.gammas.get(h);
            let base = (slot * h_n + h) * k_n * v_n;
            let qk = (n * h_n + h) * k_n;
            let vo = (n * h_n + h) * v_n;
            let mut o_ref = vec![0.0f64; v_n];
            let mut o_mag = vec![0.0f64; v_n];
            for kk in 0..k_n {
                for vv in 0..v_n {
                    let old = f64::from(pool[base + kk * v_n + vv]);
                    let kv = k[qk + kk] * v[vo + vv];
                    let new = g * old + kv;
                    let got = f64::from(new_pool[base + kk * v_n + vv]);
                    // γ within an ulp, one rounded product, one fma.
                    let tol = 3.0 * 2f64.powi(-24) * (old.abs() + kv.abs());
                    assert!(
                        (got - new).abs() <= tol,
                        "{s} state n{n} h{h} [{kk},{vv}]: {got} vs {new}"
                    );
                    let term = f64::from(case.scale) * q[qk + kk] * new;
                    o_ref[vv] += term;
                    o_mag[vv] += term.abs();
                }
            }
            for vv in 0..v_n {
                let got = o[vo + vv];
                // f32 accumulation over K terms plus R partial sums, then one rounding to dtype.
                let tol =
                    (k_n as f64 + 4.0) * 2f64.powi(-24) * o_mag[vv] + out_ulp * o_ref[vv].abs();
                assert!(
                    (got - o_ref[vv]).abs() <= tol,
                    "{s} o n{n} h{h} [{vv}]: {got} vs {}",
                    o_ref[vv]
                );
            }
        }
    }
    for (slot, &t) in touched.iter().enumerate() {
        if !t {
            let r = slot * h_n * k_n * v_n..(slot + 1) * h_n * k_n * v_n;
            assert_eq!(
                new_pool[r.clone()],
                pool[r],
                "untouched slot {slot} changed"
            );
        }
    }
    report
}

#[test]
fn named_retnet8_f16_matches_f64() {
    run(&Case {
        spec: KernelSpec::decode(
            64,
            64,
            GammaSet::Retnet { heads: 8 },
            Dtype::F16,
            Arch::Sm80,
        ),
        gammas: Gammas::retnet(8).unwrap(),
        rows: 3,
        slots: vec![2, 0, 3],
        pool_slots: 4,
        scale: 0.125,
    });
}

#[test]
fn runtime_gamma_bf16_and_f32_match_f64() {
    // 0.3 takes the ex2 branch, 1 - 2^-20 the near-one polynomial.
    let gammas = Gammas::from_list(vec![0.3, 1.0 - 2f64.powi(-20)]).unwrap();
    for (k, v, dtype) in [(64, 128, Dtype::Bf16), (128, 128, Dtype::F32)] {
        run(&Case {
            spec: KernelSpec::decode(k, v, GammaSet::Runtime, dtype, Arch::Sm90),
            gammas: gammas.clone(),
            rows: 2,
            slots: vec![1, 0],
            pool_slots: 3,
            scale: -0.7,
        });
    }
}

#[test]
fn tile_variants_match_f64() {
    use kernel_gen::TileConfig;
    // Fewer threads than K (q/k staged in several passes), fewer than V (several outputs per
    // thread), one row group (R = 1), and 1, 2 or 8 rows per step.
    let gammas = Gammas::from_list(vec![0.9, 0.999]).unwrap();
    for (k, v, threads, rows_per_step) in [
        (128, 64, 64, 2),
        (64, 512, 128, 8),
        (256, 128, 1024, 1),
        (64, 256, 512, 4),
    ] {
        let spec = KernelSpec {
            tile: TileConfig {
                threads,
                rows_per_step,
            },
            ..KernelSpec::decode(k, v, GammaSet::Runtime, Dtype::F16, Arch::Sm80)
        };
        if let Some(ptxas) = kernel_gen::ptxas::find_ptxas() {
            let info =
                kernel_gen::ptxas::assemble(&ptxas, &emit_ptx(&spec).unwrap(), spec.arch).unwrap();
            assert!(!info.spills(), "{spec}: {info:?}");
        }
        run(&Case {
            spec,
            gammas: gammas.clone(),
            rows: 2,
            slots: vec![0, 1],
            pool_slots: 2,
            scale: 0.3,
        });
    }
}

#[test]
fn one_row_of_a_1p3b_layer_fills_the_grid() {
    // Batch 1 of the 1.3b model (H = 8, K = 256, V = 512, bf16).
    let report = run(&Case {
        spec: KernelSpec::decode(
            256,
            512,
            GammaSet::Retnet { heads: 8 },
            Dtype::Bf16,
            Arch::Sm90,
        ),
        gammas: Gammas::retnet(8).unwrap(),
        rows: 1,
        slots: vec![0],
        pool_slots: 1,
        scale: 0.0625,
    });
    // 8 CTAs before the value split; now 16 slices of W = 32 columns each.
    assert_eq!(report.grid, [1, 8, 16]);
    assert_eq!(report.shared_bank_conflicts, 0);
    eprintln!(
        "grid {:?} block {:?}: {} CTAs, {} bytes read, {} written, {} sectors/request, {} bank conflicts",
        report.grid,
        report.block,
        report.grid.iter().product::<u32>(),
        report.global_bytes_read,
        report.global_bytes_written,
        report.sectors_per_request,
        report.shared_bank_conflicts
    );
}
