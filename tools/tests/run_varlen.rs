//! `retention run` on packed variable-length batches (`cu_seqlens`), with per-sequence
//! initial states.

mod common;

use common::{Tensor, assert_exact, random, run_ok, workspace, write_input};
use retention_core::{CuSeqlens, Dtype, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{
    RetentionParams, chunkwise_varlen, max_rel_diff, parallel, recurrent_varlen,
};
use safetensors::Dtype as StDtype;

/// Four sequences, one of them empty, packed into 20 tokens.
const BOUNDS: [i64; 5] = [0, 5, 5, 12, 20];

fn cu_i64() -> Tensor {
    let bytes = BOUNDS.iter().flat_map(|b| b.to_le_bytes()).collect();
    Tensor::new("cu_seqlens", StDtype::I64, &[BOUNDS.len()], bytes)
}

fn cu_i32() -> Tensor {
    let bytes = BOUNDS
        .iter()
        .flat_map(|&b| (b as i32).to_le_bytes())
        .collect();
    Tensor::new("cu_seqlens", StDtype::I32, &[BOUNDS.len()], bytes)
}

#[test]
fn packed_batches_match_the_reference_varlen_forms() {
    let (t, h, dk, dv, n) = (20, 2, 4, 6, BOUNDS.len() - 1);
    let mut rng = SplitMix64::new(99);
    let q = random("q", Dtype::F16, &[1, t, h, dk], &mut rng);
    let k = random("k", Dtype::F16, &[1, t, h, dk], &mut rng);
    let v = random("v", Dtype::F16, &[1, t, h, dv], &mut rng);
    let h0 = random("h0", Dtype::F32, &[n, h, dk, dv], &mut rng);
    let cu = CuSeqlens::from_i64(&BOUNDS, t).unwrap();
    let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let (dir, input, out) = workspace();

    for (cu_tensor, kind) in [(cu_i64(), "i64"), (cu_i32(), "i32")] {
        write_input(
            &input,
            &[
                q.tensor.clone(),
                k.tensor.clone(),
                v.tensor.clone(),
                h0.tensor.clone(),
                cu_tensor,
            ],
        );
        let got = run_ok(&input, &out, &["--form", "recurrent"]);
        let (o, ht) = recurrent_varlen(
            &q.values,
            &k.values,
            &v.values,
            &cu,
            &params,
            Some(&h0.values),
        )
        .unwrap();
        assert_exact(&got["o"], Dtype::F16, &o, &format!("{kind} recurrent o"));
        assert_exact(&got["ht"], Dtype::F32, &ht, &format!("{kind} recurrent ht"));

        let got = run_ok(&input, &out, &["--form", "chunkwise", "--chunk", "3"]);
        let (o, ht) = chunkwise_varlen(
            &q.values,
            &k.values,
            &v.values,
            &cu,
            &params,
            3,
            Some(&h0.values),
        )
        .unwrap();
        assert_exact(&got["o"], Dtype::F16, &o, &format!("{kind} chunkwise o"));
        assert_exact(&got["ht"], Dtype::F32, &ht, &format!("{kind} chunkwise ht"));
        assert_eq!(got["ht"].shape, [n, h, dk, dv]);
        // The empty sequence passes its initial state through unchanged.
        let empty = 1;
        let len = h * dk * dv;
        assert_eq!(
            common::f32_values(&got["ht"]).data()[empty * len..(empty + 1) * len],
            h0.values.data()[empty * len..(empty + 1) * len]
        );
    }
    drop(dir);
}

/// Tokens `range` of a packed `[1, ΣT, H, D]` tensor.
fn rows(t: &HostTensor<f64>, range: std::ops::Range<usize>) -> HostTensor<f64> {
    let row = t.shape()[2] * t.shape()[3];
    HostTensor::new(
        vec![1, range.len(), t.shape()[2], t.shape()[3]],
        t.data()[range.start * row..range.end * row].to_vec(),
    )
    .unwrap()
}

#[test]
fn parallel_runs_once_per_sequence() {
    let (t, h, dk, dv) = (20, 3, 4, 5);
    let mut rng = SplitMix64::new(7);
    let q = random("q", Dtype::F32, &[1, t, h, dk], &mut rng);
    let k = random("k", Dtype::F32, &[1, t, h, dk], &mut rng);
    let v = random("v", Dtype::F32, &[1, t, h, dv], &mut rng);
    let (_dir, input, out) = workspace();
    write_input(&input, &[q.tensor, k.tensor, v.tensor, cu_i64()]);
    let got = run_ok(&input, &out, &["--form", "parallel"]);
    assert!(!got.contains_key("ht"));

    let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let cu = CuSeqlens::from_i64(&BOUNDS, t).unwrap();
    let mut expected = HostTensor::<f64>::zeros(vec![1, t, h, dv]);
    let row = h * dv;
    for s in 0..cu.num_seqs() {
        let r = cu.range(s);
        if r.is_empty() {
            continue;
        }
        let o = parallel(
            &rows(&q.values, r.clone()),
            &rows(&k.values, r.clone()),
            &rows(&v.values, r.clone()),
            &params,
        )
        .unwrap();
        expected.data_mut()[r.start * row..r.end * row].copy_from_slice(o.data());
    }
    assert_exact(&got["o"], Dtype::F32, &expected, "per-sequence parallel o");

    // Sequences are independent: the same as the recurrent varlen form from zero states, and
    // far from one parallel pass over the whole packed batch.
    let (o_rec, _) = recurrent_varlen(&q.values, &k.values, &v.values, &cu, &params, None).unwrap();
    assert!(max_rel_diff(expected.data(), o_rec.data()) < 1e-12);
    let whole = parallel(&q.values, &k.values, &v.values, &params).unwrap();
    assert!(max_rel_diff(whole.data(), expected.data()) > 1e-3);
}
