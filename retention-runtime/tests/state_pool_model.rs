//! Model-based test of `StatePool`: random sequences of alloc / free / step / prefill /
//! snapshot / restore against a plain model computed with the f64 reference.

use proptest::prelude::*;
use retention_core::{Gammas, HostTensor, RetentionError, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::{Device, HostState, MemoryPool, Slot, StateConfig, StatePool};

const H: usize = 2;
const K: usize = 3;
const V: usize = 4;
const LAYERS: usize = 2;
const CAPACITY: usize = 3;
/// f32 state against the f64 model, relative to the largest magnitude.
const TOL: f64 = 1e-5;

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    Free(usize),
    Step {
        layer: usize,
        picks: Vec<usize>,
        seed: u64,
    },
    Prefill {
        layer: usize,
        pick: usize,
        len: usize,
        chunk: usize,
        seed: u64,
    },
    Snapshot(usize),
    Restore {
        pick: usize,
        from: usize,
    },
    UseStale,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Alloc),
        1 => (0usize..8).prop_map(Op::Free),
        4 => (0..LAYERS, prop::collection::vec(0usize..8, 1..4), any::<u64>())
            .prop_map(|(layer, picks, seed)| Op::Step { layer, picks, seed }),
        2 => (0..LAYERS, 0usize..8, 1usize..12, 1usize..6, any::<u64>())
            .prop_map(|(layer, pick, len, chunk, seed)| Op::Prefill { layer, pick, len, chunk, seed }),
        1 => (0usize..8).prop_map(Op::Snapshot),
        1 => (0usize..8, 0usize..8).prop_map(|(pick, from)| Op::Restore { pick, from }),
        1 => Just(Op::UseStale),
    ]
}

fn cfg() -> StateConfig {
    StateConfig {
        heads: H,
        dk: K,
        dv: V,
        params: RetentionParams::new(Gammas::retnet(H).unwrap(), Some(0.7)),
    }
}

fn close(actual: &[f64], expected: &[f64]) -> bool {
    let scale = expected.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
    reference::max_abs_diff(actual, expected) <= TOL * scale
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn state_pool_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let memory = MemoryPool::new();
        let mut pool = StatePool::new(&Device::Cpu, &memory, &cfg(), LAYERS, CAPACITY).unwrap();
        let params = cfg().params;
        // Model: live handles with their f64 state per layer.
        let mut live: Vec<(Slot, Vec<Vec<f64>>)> = Vec::new();
        let mut stale: Vec<Slot> = Vec::new();
        let mut snapshots: Vec<(HostState, Vec<Vec<f64>>)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc => match pool.alloc() {
                    Ok(slot) => live.push((slot, vec![vec![0.0; H * K * V]; LAYERS])),
                    Err(e) => {
                        prop_assert_eq!(live.len(), CAPACITY);
                        prop_assert!(matches!(e, RetentionError::Slot(_)));
                    }
                },
                Op::Free(i) if !live.is_empty() => {
                    let (slot, _) = live.remove(i % live.len());
                    pool.free(slot).unwrap();
                    stale.push(slot);
                }
                Op::Step { layer, picks, seed } if !live.is_empty() => {
                    let mut rows: Vec<usize> = picks.iter().map(|p| p % live.len()).collect();
                    rows.dedup();
                    let n = rows.len();
                    let mut rng = SplitMix64::new(seed);
                    let q = HostTensor::<f32>::from_f64(vec![n, H, K], &rng.vec(n * H * K)).unwrap();
                    let k = HostTensor::<f32>::from_f64(vec![n, H, K], &rng.vec(n * H * K)).unwrap();
                    let v = HostTensor::<f32>::from_f64(vec![n, H, V], &rng.vec(n * H * V)).unwrap();
                    let slots: Vec<Slot> = rows.iter().map(|&r| live[r].0).collect();
                    let distinct = rows.iter().collect::<std::collections::HashSet<_>>().len() == n;
                    let got = pool.step(layer, &slots, &q, &k, &v);
                    if !distinct {
                        prop_assert!(matches!(got, Err(RetentionError::Slot(_))));
                        continue;
                    }
                    let got = got.unwrap().to_f64();
                    let mut model_pool = HostTensor::new(
                        vec![n, H, K, V],
                        rows.iter().flat_map(|&r| live[r].1[layer].clone()).collect(),
                    ).unwrap();
                    let ident: Vec<usize> = (0..n).collect();
                    let want = reference::decode_step(&q.to_f64(), &k.to_f64(), &v.to_f64(), &mut model_pool, &ident, &params).unwrap();
                    prop_assert!(close(got.data(), want.data()));
                    for (j, &r) in rows.iter().enumerate() {
                        live[r].1[layer] = model_pool.data()[j * H * K * V..(j + 1) * H * K * V].to_vec();
                    }
                }
                Op::Prefill { layer, pick, len, chunk, seed } if !live.is_empty() => {
                    let r = pick % live.len();
                    let mut rng = SplitMix64::new(seed);
                    let q = HostTensor::<f32>::from_f64(vec![1, len, H, K], &rng.vec(len * H * K)).unwrap();
                    let k = HostTensor::<f32>::from_f64(vec![1, len, H, K], &rng.vec(len * H * K)).unwrap();
                    let v = HostTensor::<f32>::from_f64(vec![1, len, H, V], &rng.vec(len * H * V)).unwrap();
                    let got = pool.prefill(layer, live[r].0, &q, &k, &v, chunk).unwrap().to_f64();
                    let h0 = HostTensor::new(vec![1, H, K, V], live[r].1[layer].clone()).unwrap();
                    let (want, ht) = reference::recurrent(&q.to_f64(), &k.to_f64(), &v.to_f64(), &params, Some(&h0)).unwrap();
                    prop_assert!(close(got.data(), want.data()));
                    live[r].1[layer] = ht.into_data();
                }
                Op::Snapshot(i) if !live.is_empty() => {
                    let r = i % live.len();
                    let snap = pool.snapshot(live[r].0).unwrap();
                    let flat: Vec<f64> = live[r].1.concat();
                    prop_assert!(close(&snap.0.to_f64().into_data(), &flat));
                    snapshots.push((snap, live[r].1.clone()));
                }
                Op::Restore { pick, from } if !live.is_empty() && !snapshots.is_empty() => {
                    let r = pick % live.len();
                    let (snap, model) = snapshots[from % snapshots.len()].clone();
                    pool.restore(live[r].0, &snap).unwrap();
                    prop_assert!(close(&snap.0.to_f64().into_data(), &model.concat()));
                    // The pool now holds the f32 snapshot exactly; the model follows it.
                    live[r].1 = snap.0.data().chunks(H * K * V).map(|c| c.iter().map(|&x| f64::from(x)).collect()).collect();
                }
                Op::UseStale => {
                    if let Some(&s) = stale.last() {
                        prop_assert!(matches!(pool.snapshot(s), Err(RetentionError::Slot(_))));
                        prop_assert!(matches!(pool.reset(s), Err(RetentionError::Slot(_))));
                        let q = HostTensor::<f32>::zeros(vec![1, H, K]);
                        let v = HostTensor::<f32>::zeros(vec![1, H, V]);
                        prop_assert!(matches!(pool.step(0, &[s], &q, &q, &v), Err(RetentionError::Slot(_))));
                    }
                }
                _ => {}
            }
            prop_assert_eq!(pool.in_use(), live.len());
        }
        // Every live state still matches the model.
        for (slot, model) in &live {
            let snap = pool.snapshot(*slot).unwrap();
            prop_assert!(close(&snap.0.to_f64().into_data(), &model.concat()));
        }
    }
}

#[test]
fn foreign_slot_and_bad_layer_are_errors() {
    let memory = MemoryPool::new();
    let mut a = StatePool::new(&Device::Cpu, &memory, &cfg(), LAYERS, 2).unwrap();
    let mut b = StatePool::new(&Device::Cpu, &memory, &cfg(), LAYERS, 2).unwrap();
    let sa = a.alloc().unwrap();
    let _sb = b.alloc().unwrap();
    assert!(matches!(b.snapshot(sa), Err(RetentionError::Slot(_))));
    let q = HostTensor::<f32>::zeros(vec![1, H, K]);
    let v = HostTensor::<f32>::zeros(vec![1, H, V]);
    assert!(matches!(
        a.step(LAYERS, &[sa], &q, &q, &v),
        Err(RetentionError::Unsupported { .. })
    ));
    let q_bad = HostTensor::<f32>::zeros(vec![1, H, K + 1]);
    assert!(matches!(
        a.step(0, &[sa], &q_bad, &q, &v),
        Err(RetentionError::ShapeMismatch { .. })
    ));
}

/// State memory does not grow with context: the pool's high-water mark after decoding 1k
/// tokens equals the one after 64k.
#[test]
fn state_memory_is_constant_in_context_length() {
    let mut marks = Vec::new();
    for tokens in [1024usize, 65_536] {
        let memory = MemoryPool::new();
        let mut pool = StatePool::new(&Device::Cpu, &memory, &cfg(), 1, 1).unwrap();
        let slot = pool.alloc().unwrap();
        let mut rng = SplitMix64::new(3);
        let q = HostTensor::<f32>::from_f64(vec![1, H, K], &rng.vec(H * K)).unwrap();
        let v = HostTensor::<f32>::from_f64(vec![1, H, V], &rng.vec(H * V)).unwrap();
        for _ in 0..tokens {
            pool.step(0, &[slot], &q, &q, &v).unwrap();
        }
        marks.push(memory.stats().high_water);
    }
    assert_eq!(marks[0], marks[1]);
    assert_eq!(marks[0], retention_runtime::size_class(H * K * V * 4));
}

#[test]
fn capped_memory_reports_out_of_memory() {
    let memory = MemoryPool::with_limit(Some(1024));
    let err = StatePool::new(&Device::Cpu, &memory, &cfg(), LAYERS, 100).unwrap_err();
    assert!(matches!(err, RetentionError::OutOfMemory { .. }));
    assert!(StatePool::new(&Device::Cpu, &memory, &cfg(), 1, 2).is_ok());
    assert_eq!(Device::best(), Device::Cpu);
}
