//! One test body per op, run on every device this machine has: `Cpu`, `Emulated(sm_80)`,
//! `Emulated(sm_90)`, and `Cuda(0)` where a GPU answers (the state then lives in GPU memory). Each device must
//! equal the f64 reference within the dtype tolerances of ARCHITECTURE §4: f32 outputs ≤ 1e-5
//! relative, f16/bf16 outputs relative RMSE ≤ 5e-3; states (always f32) ≤ 1e-5 relative.

use half::bf16;
use kernel_gen::Arch;
use retention_core::{Dtype, Element, Gammas, HostTensor, SplitMix64};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::{Device, MemoryPool, StateConfig, StatePool};

mod common;
use common::devices;

const H: usize = 2;
const K: usize = 64;
const V: usize = 64;

fn check_output(what: &str, dtype: Dtype, got: &[f64], want: &[f64]) {
    match dtype {
        Dtype::F32 => {
            let e = reference::max_rel_diff(got, want);
            assert!(e <= 1e-5, "{what}: max rel diff {e:e}");
        }
        Dtype::F16 | Dtype::Bf16 => {
            let e = reference::rel_rmse(got, want);
            assert!(e <= 5e-3, "{what}: rel RMSE {e:e}");
        }
    }
}

fn random<T: Element>(rng: &mut SplitMix64, shape: Vec<usize>) -> HostTensor<T> {
    let n = shape.iter().product();
    HostTensor::from_f64(shape, &rng.vec(n)).unwrap()
}

/// Prefill two sequences, decode them in scrambled slots while a third joins and one leaves,
/// snapshot and restore — against the reference on the same (dtype-rounded) inputs.
fn serve_like_a_server<T: CpuElement>(device: &Device, gammas: Gammas) {
    let dtype = T::DTYPE.unwrap();
    let what = |s: &str| format!("{device} {dtype} {s}");
    let params = RetentionParams::new(gammas, Some(0.37));
    let cfg = StateConfig {
        heads: H,
        dk: K,
        dv: V,
        params: params.clone(),
    };
    let memory = MemoryPool::on(device, None).unwrap();
    let mut pool = StatePool::new(device, &memory, &cfg, 2, 4).unwrap();
    let mut rng = SplitMix64::new(17);
    let filler = pool.alloc().unwrap(); // occupies slot 0 so the others are scrambled
    let a = pool.alloc().unwrap();
    let b = pool.alloc().unwrap();
    // Reference states per (sequence, layer 1).
    let zero = HostTensor::<f64>::zeros(vec![1, H, K, V]);
    let mut ref_state = [zero.clone(), zero.clone(), zero];
    for (idx, slot) in [a, b].into_iter().enumerate() {
        // The second prefill takes the chunkwise kernel on emulated devices (C = 32, a full
        // and a partial chunk); the first a chunk no kernel serves (decode launches).
        let (t, chunk) = if idx == 0 { (3, 2) } else { (37, 32) };
        let q = random::<T>(&mut rng, vec![1, t, H, K]);
        let k = random::<T>(&mut rng, vec![1, t, H, K]);
        let v = random::<T>(&mut rng, vec![1, t, H, V]);
        let o = pool.prefill(1, slot, &q, &k, &v, chunk).unwrap();
        let (want, ht) = reference::chunkwise(
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            &params,
            chunk,
            Some(&ref_state[idx]),
        )
        .unwrap();
        check_output(&what("prefill o"), dtype, o.to_f64().data(), want.data());
        ref_state[idx] = ht;
    }
    // Decode: rows [b, a] (scrambled), then a third sequence joins and `a` leaves.
    let c = pool.alloc().unwrap();
    let schedule: [Vec<(usize, retention_runtime::Slot)>; 3] = [
        vec![(1, b), (0, a)],
        vec![(2, c), (1, b), (0, a)],
        vec![(1, b), (2, c)],
    ];
    for (step, rows) in schedule.iter().enumerate() {
        if step == 2 {
            pool.free(a).unwrap();
        }
        let n = rows.len();
        let q = random::<T>(&mut rng, vec![n, H, K]);
        let k = random::<T>(&mut rng, vec![n, H, K]);
        let v = random::<T>(&mut rng, vec![n, H, V]);
        let slots: Vec<_> = rows.iter().map(|r| r.1).collect();
        let o = pool.step(1, &slots, &q, &k, &v).unwrap();
        let mut gathered = HostTensor::new(
            vec![n, H, K, V],
            rows.iter()
                .flat_map(|r| ref_state[r.0].data().to_vec())
                .collect(),
        )
        .unwrap();
        let ident: Vec<usize> = (0..n).collect();
        let want = reference::decode_step(
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            &mut gathered,
            &ident,
            &params,
        )
        .unwrap();
        check_output(
            &what(&format!("step {step} o")),
            dtype,
            o.to_f64().data(),
            want.data(),
        );
        for (j, r) in rows.iter().enumerate() {
            let len = H * K * V;
            ref_state[r.0] = HostTensor::new(
                vec![1, H, K, V],
                gathered.data()[j * len..(j + 1) * len].to_vec(),
            )
            .unwrap();
        }
    }
    // States: layer 1 follows the reference, layer 0 was never touched.
    for (idx, slot) in [(1, b), (2, c)] {
        let snap = pool.snapshot(slot).unwrap().0.to_f64();
        let len = H * K * V;
        assert!(
            snap.data()[..len].iter().all(|&x| x == 0.0),
            "{}",
            what("layer 0 untouched")
        );
        let e = reference::max_rel_diff(&snap.data()[len..], ref_state[idx].data());
        assert!(e <= 1e-5, "{}: state rel diff {e:e}", what("snapshot"));
    }
    // Restore b's state into the filler slot: the two then decode identically.
    let snap = pool.snapshot(b).unwrap();
    pool.restore(filler, &snap).unwrap();
    let q = random::<T>(&mut rng, vec![1, H, K]);
    let k = random::<T>(&mut rng, vec![1, H, K]);
    let v = random::<T>(&mut rng, vec![1, H, V]);
    let o1 = pool.step(1, &[filler], &q, &k, &v).unwrap();
    let o2 = pool.step(1, &[b], &q, &k, &v).unwrap();
    assert_eq!(
        o1.data(),
        o2.data(),
        "{}",
        what("restored state decodes identically")
    );
}

#[test]
fn state_pool_serves_on_every_device_f32_named_gammas() {
    for device in devices() {
        serve_like_a_server::<f32>(&device, Gammas::retnet(H).unwrap());
    }
    // The emulated runs really went through generated PTX: decode and chunkwise kernels for
    // both archs.
    let specs = retention_runtime::ModuleCache::global().specs();
    for arch in [Arch::Sm80, Arch::Sm90] {
        for op in [
            kernel_gen::KernelOp::Decode,
            kernel_gen::KernelOp::Chunkwise,
        ] {
            assert!(
                specs.iter().any(|s| s.arch == arch && s.op == op),
                "{op:?} on {arch}"
            );
        }
    }
}

#[test]
fn state_pool_serves_on_every_device_bf16_sharded_gammas() {
    // Sharded heads select the runtime-γ kernel on emulated devices.
    for device in devices() {
        serve_like_a_server::<bf16>(&device, Gammas::retnet_sharded(H, 14).unwrap());
    }
}

#[test]
fn emulated_decode_rejects_head_dims_no_kernel_serves() {
    let params = RetentionParams::new(Gammas::retnet(1).unwrap(), None);
    // Decode kernels are generated for any K <= 256 and V <= 512: K = 257 has none.
    let cfg = StateConfig {
        heads: 1,
        dk: 257,
        dv: 5,
        params,
    };
    let memory = MemoryPool::new();
    let mut pool = StatePool::new(&Device::Emulated(Arch::Sm80), &memory, &cfg, 1, 1).unwrap();
    let s = pool.alloc().unwrap();
    let q = HostTensor::<f32>::zeros(vec![1, 1, 257]);
    let v = HostTensor::<f32>::zeros(vec![1, 1, 5]);
    let err = pool.step(0, &[s], &q, &q, &v).unwrap_err();
    assert!(
        matches!(err, retention_core::RetentionError::Unsupported { .. }),
        "{err}"
    );
}
