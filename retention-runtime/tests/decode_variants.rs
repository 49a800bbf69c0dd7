//! The runtime's decode dispatch launches the value-slice variant the plan picks for the
//! batch (`kernel_gen::decode_variant`): on the emulated A100 (108 SMs, target 216 CTAs),
//! K = 128, V = 256 and 4 heads, one row keeps the narrow default slice (32 columns, 8 CTAs
//! per row and head) and 64 rows take one CTA per (row, head) (W = 256). Both equal the f64
//! reference over two steps within ARCHITECTURE §4's tolerances (bf16 outputs relative RMSE
//! ≤ 5e-3, the f32 state ≤ 1e-5 relative).

use half::bf16;
use kernel_gen::{Arch, KernelOp};
use retention_core::{Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::{Device, MemoryPool, ModuleCache, StateConfig, StatePool};

const H: usize = 4;
const K: usize = 128;
const V: usize = 256;

/// Two decode steps of `rows` fresh sequences on the emulated A100, against the reference.
fn decode_rows(rows: usize, seed: u64) {
    let device = Device::Emulated(Arch::Sm80);
    let params = RetentionParams::new(Gammas::retnet(H).unwrap(), Some(0.37));
    let cfg = StateConfig {
        heads: H,
        dk: K,
        dv: V,
        params: params.clone(),
    };
    let memory = MemoryPool::on(&device, None).unwrap();
    let mut pool = StatePool::new(&device, &memory, &cfg, 1, rows).unwrap();
    let slots: Vec<_> = (0..rows).map(|_| pool.alloc().unwrap()).collect();
    let mut state = HostTensor::<f64>::zeros(vec![rows, H, K, V]);
    let ident: Vec<usize> = (0..rows).collect();
    let mut rng = SplitMix64::new(seed);
    for step in 0..2 {
        let mut input = |d| {
            let n = rows * H * d;
            HostTensor::<bf16>::from_f64(vec![rows, H, d], &rng.vec(n)).unwrap()
        };
        let (q, k, v) = (input(K), input(K), input(V));
        let o = pool.step(0, &slots, &q, &k, &v).unwrap();
        let want = reference::decode_step(
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            &mut state,
            &ident,
            &params,
        )
        .unwrap();
        let e = reference::rel_rmse(o.to_f64().data(), want.data());
        assert!(e <= 5e-3, "{rows} rows, step {step}: o rel RMSE {e:e}");
    }
    let len = H * K * V;
    for (r, &slot) in slots.iter().enumerate().step_by(rows.div_ceil(3).max(1)) {
        let snap = pool.snapshot(slot).unwrap().0.to_f64();
        let e = reference::max_rel_diff(snap.data(), &state.data()[r * len..(r + 1) * len]);
        assert!(e <= 1e-5, "{rows} rows, row {r}: state rel diff {e:e}");
    }
}

#[test]
fn decode_launches_the_slice_the_batch_needs_and_matches_the_reference() {
    decode_rows(1, 3);
    decode_rows(64, 4);
    let slices: Vec<Option<u32>> = ModuleCache::global()
        .specs()
        .iter()
        .filter(|s| s.op == KernelOp::Decode && (s.k, s.v) == (128, 256))
        .map(|s| s.chunk)
        .collect();
    assert!(slices.contains(&None), "{slices:?}");
    assert!(slices.contains(&Some(256)), "{slices:?}");
}
