//! The candle ops against the library and the f64 reference (ARCHITECTURE §4 tolerances:
//! f32 max relative 1e-5, f16/bf16 relative RMSE 5e-3), and their gradients through candle's
//! backprop (`Var`, `backward()`) against the library's backward (exactly: the same kernels)
//! and a central finite difference of the f64 reference (1e-5 of the gradient's largest
//! magnitude, ARCHITECTURE §7).

use std::sync::Arc;

use candle_core::{DType, Device as CDevice, Tensor, Var, WithDType};
use half::{bf16, f16};
use retention::{CpuElement, Device, Gammas, HostTensor, Retention, RetentionParams, reference};
use retention_candle::{chunkwise_retention, parallel_retention};

const S: [usize; 5] = [2, 9, 2, 4, 3]; // B, T, H, K, V

fn retention(heads: usize) -> Arc<Retention> {
    let p = RetentionParams::new(Gammas::retnet(heads).unwrap(), Some(0.4));
    Arc::new(Retention::new(&Device::Cpu, p).unwrap())
}

/// A deterministic input as a host tensor of `T`.
fn input<T: CpuElement>(shape: &[usize], seed: usize) -> HostTensor<T> {
    let n: usize = shape.iter().product();
    let f: Vec<f64> = (0..n)
        .map(|i| (((i * 7 + seed * 13) % 11) as f64 - 5.0) / 6.0)
        .collect();
    HostTensor::from_f64(shape.to_vec(), &f).unwrap()
}

fn candle_of<T: CpuElement + WithDType>(h: &HostTensor<T>) -> Tensor {
    Tensor::from_vec(h.data().to_vec(), h.shape().to_vec(), &CDevice::Cpu).unwrap()
}

fn f64_of(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn qkv<T: CpuElement>() -> [HostTensor<T>; 3] {
    let [b, t, h, k, v] = S;
    [
        input(&[b, t, h, k], 1),
        input(&[b, t, h, k], 2),
        input(&[b, t, h, v], 3),
    ]
}

fn forwards_meet_the_reference<T: CpuElement + WithDType>(
    tol: f64,
    metric: fn(&[f64], &[f64]) -> f64,
) {
    let ret = retention(S[2]);
    let [q, k, v] = qkv::<T>();
    let (cq, ck, cv) = (candle_of(&q), candle_of(&k), candle_of(&v));
    let o_c = chunkwise_retention(&cq, &ck, &cv, &ret, 4).unwrap();
    let o_p = parallel_retention(&cq, &ck, &cv, &ret).unwrap();
    // Equal to the library's own result: the same CPU kernels ran.
    let (want_c, _) = ret.chunkwise(&q, &k, &v, 4, None).unwrap();
    let want_p = ret.parallel(&q, &k, &v).unwrap();
    assert_eq!(
        o_c.flatten_all().unwrap().to_vec1::<T>().unwrap(),
        want_c.data()
    );
    assert_eq!(
        o_p.flatten_all().unwrap().to_vec1::<T>().unwrap(),
        want_p.data()
    );
    let r = reference::parallel(&q.to_f64(), &k.to_f64(), &v.to_f64(), ret.params()).unwrap();
    let (ec, ep) = (
        metric(&f64_of(&o_c), r.data()),
        metric(&f64_of(&o_p), r.data()),
    );
    assert!(
        ec < tol && ep < tol,
        "{}: chunkwise {ec:e}, parallel {ep:e}",
        std::any::type_name::<T>()
    );
}

#[test]
fn forwards_equal_the_library_and_the_reference() {
    forwards_meet_the_reference::<f32>(1e-5, reference::max_rel_diff);
    forwards_meet_the_reference::<f16>(5e-3, reference::rel_rmse);
    forwards_meet_the_reference::<bf16>(5e-3, reference::rel_rmse);
}

/// dq, dk, dv of L = Σ o ⊙ w through candle's backprop, for the op `op`.
fn candle_grads<T: CpuElement + WithDType>(
    op: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
    [q, k, v]: &[HostTensor<T>; 3],
    w: &HostTensor<T>,
) -> [Tensor; 3] {
    let vars = [q, k, v].map(|x| Var::from_tensor(&candle_of(x)).unwrap());
    let o = op(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
    );
    let loss = (o * candle_of(w)).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    vars.map(|x| grads.get(x.as_tensor()).expect("a gradient").clone())
}

fn gradients_equal_the_library<T: CpuElement + WithDType>() {
    let ret = retention(S[2]);
    let x = qkv::<T>();
    let [b, t, h, _, v] = S;
    let w = input::<T>(&[b, t, h, v], 4);
    let r2 = ret.clone();
    let chunk =
        move |q: &Tensor, k: &Tensor, v: &Tensor| chunkwise_retention(q, k, v, &r2, 3).unwrap();
    let r3 = ret.clone();
    let par = move |q: &Tensor, k: &Tensor, v: &Tensor| parallel_retention(q, k, v, &r3).unwrap();
    let want_c = ret
        .chunkwise_backward((&x[0], &x[1], &x[2]), 3, None, &w, None)
        .unwrap();
    let want_p = ret.parallel_backward((&x[0], &x[1], &x[2]), &w).unwrap();
    for (got, want) in [
        (candle_grads(&chunk, &x, &w), want_c),
        (candle_grads(&par, &x, &w), want_p),
    ] {
        for (g, (name, d)) in got
            .iter()
            .zip([("dq", &want.dq), ("dk", &want.dk), ("dv", &want.dv)])
        {
            let g = g.flatten_all().unwrap().to_vec1::<T>().unwrap();
            assert_eq!(g, d.data(), "{} {name}", std::any::type_name::<T>());
        }
    }
}

#[test]
fn gradients_through_candle_equal_the_library_backward() {
    gradients_equal_the_library::<f32>();
    gradients_equal_the_library::<bf16>();
}

#[test]
fn gradients_match_a_finite_difference_of_the_reference() {
    let (b, t, h, dk, dv) = (1, 4, 1, 2, 2);
    let ret = retention(h);
    let x = [
        input::<f32>(&[b, t, h, dk], 5),
        input::<f32>(&[b, t, h, dk], 6),
        input::<f32>(&[b, t, h, dv], 7),
    ];
    let w = input::<f32>(&[b, t, h, dv], 8).to_f64();
    let r2 = ret.clone();
    let op =
        move |q: &Tensor, k: &Tensor, v: &Tensor| chunkwise_retention(q, k, v, &r2, 3).unwrap();
    let got = candle_grads(&op, &x, &w.cast::<f32>());
    let loss = |xs: &[HostTensor<f64>; 3]| {
        let o = reference::parallel(&xs[0], &xs[1], &xs[2], ret.params()).unwrap();
        o.data()
            .iter()
            .zip(w.data())
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    let base = x.each_ref().map(HostTensor::to_f64);
    let eps = 1e-5;
    for (i, g) in got.iter().enumerate() {
        let fd: Vec<f64> = (0..base[i].len())
            .map(|j| {
                let mut up = base.clone();
                up[i].data_mut()[j] += eps;
                let mut dn = base.clone();
                dn[i].data_mut()[j] -= eps;
                (loss(&up) - loss(&dn)) / (2.0 * eps)
            })
            .collect();
        let e = reference::max_rel_diff(&f64_of(g), &fd);
        assert!(e < 1e-5, "input {i}: {e:e}");
    }
}

#[test]
fn bad_inputs_are_errors_with_a_message() {
    let ret = retention(S[2]);
    let [q, k, v] = qkv::<f32>();
    let (cq, ck, cv) = (candle_of(&q), candle_of(&k), candle_of(&v));
    let e = chunkwise_retention(&cq, &ck.to_dtype(DType::BF16).unwrap(), &cv, &ret, 4).unwrap_err();
    assert!(e.to_string().contains("dtype"), "{e}");
    let e = chunkwise_retention(&cq, &ck, &cv, &ret, 0).unwrap_err();
    assert!(e.to_string().contains("chunk"), "{e}");
    let short_k = ck.narrow(3, 0, 3).unwrap();
    let e = parallel_retention(&cq, &short_k, &cv, &ret).unwrap_err();
    assert!(e.to_string().contains('k'), "{e}");
    let e = parallel_retention(&cq.to_dtype(DType::F64).unwrap(), &ck, &cv, &ret).unwrap_err();
    assert!(e.to_string().contains("f32, f16 or bf16"), "{e}");
}

#[test]
fn strided_inputs_are_made_contiguous_first() {
    // q as a head-major tensor transposed to token-major: a strided view candle passes through.
    let ret = retention(S[2]);
    let [q, k, v] = qkv::<f32>();
    let [b, t, h, dk, _] = S;
    let head_major = candle_of(&q).transpose(1, 2).unwrap().contiguous().unwrap();
    let strided = head_major.transpose(1, 2).unwrap();
    assert!(!strided.is_contiguous());
    assert_eq!(strided.dims(), &[b, t, h, dk]);
    let got = parallel_retention(&strided, &candle_of(&k), &candle_of(&v), &ret).unwrap();
    let want = ret.parallel(&q, &k, &v).unwrap();
    assert_eq!(
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.data()
    );
}
