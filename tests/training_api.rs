//! The facade's training API (`Retention::*_backward`, `chunkwise_for_training`,
//! `msr_epilogue_backward`) on `Device::Cpu` against the f64 reference backward, with the CPU
//! backward's tolerances: f32 gradients 1e-5 max relative, bf16 5e-3 relative RMSE, dH0
//! (f32) 1e-5 max relative; d log γ within 1e-5 of Σ|terms| (the reference on |inputs|, as
//! `retention-kernels/tests/cpu_backward.rs` explains). On the emulated GPU the chunkwise
//! backward runs the GPU kernels with the same tolerances (the parallel backward too:
//! `tests/parallel_backward_device.rs`); the other training ops refuse with a typed error,
//! and bad shapes are typed errors.

use half::bf16;
use retention::{
    CpuElement, CuSeqlens, Device, Dtype, Element, Gammas, Gradients, HostTensor, Retention,
    RetentionError, RetentionParams, reference,
};

fn input<T: Element>(shape: Vec<usize>, seed: u64) -> HostTensor<T> {
    let mut rng = retention_core::SplitMix64::new(seed);
    let n = shape.iter().product();
    HostTensor::from_f64(shape, &rng.vec(n)).unwrap()
}

fn abs(t: &HostTensor<f64>) -> HostTensor<f64> {
    HostTensor::new(
        t.shape().to_vec(),
        t.data().iter().map(|x| x.abs()).collect(),
    )
    .unwrap()
}

/// A problem: q, k, v, d_o in `T`; h0 and dH_T in f32.
struct Case<T: CpuElement> {
    q: HostTensor<T>,
    k: HostTensor<T>,
    v: HostTensor<T>,
    d_o: HostTensor<T>,
    h0: HostTensor<f32>,
    d_ht: HostTensor<f32>,
}

impl<T: CpuElement> Case<T> {
    fn new((b, t, h, k, v): (usize, usize, usize, usize, usize), rows: usize) -> Self {
        Self {
            q: input(vec![b, t, h, k], 1),
            k: input(vec![b, t, h, k], 2),
            v: input(vec![b, t, h, v], 3),
            d_o: input(vec![b, t, h, v], 4),
            h0: input(vec![rows, h, k, v], 5),
            d_ht: input(vec![rows, h, k, v], 6),
        }
    }

    /// q, k, v, dO, H0, dH_T as tensors of `ret`'s device, uploaded on `stream`.
    fn upload(&self, ret: &Retention, stream: &retention::Stream) -> [retention::DeviceTensor; 6] {
        use retention::DeviceTensor;
        let mem = ret.memory();
        let io = |t: &HostTensor<T>| DeviceTensor::upload(mem, t, stream).unwrap();
        let st = |t: &HostTensor<f32>| DeviceTensor::upload(mem, t, stream).unwrap();
        [
            io(&self.q),
            io(&self.k),
            io(&self.v),
            io(&self.d_o),
            st(&self.h0),
            st(&self.d_ht),
        ]
    }

    fn qkv(&self) -> (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>) {
        (&self.q, &self.k, &self.v)
    }

    /// The reference chunkwise (or varlen) backward, on |inputs| with |scale| when `absolute`.
    fn reference(
        &self,
        p: &RetentionParams,
        cu: Option<&CuSeqlens>,
        absolute: bool,
    ) -> reference::Gradients {
        let f = |t: HostTensor<f64>| if absolute { abs(&t) } else { t };
        let (q, k, v) = (f(self.q.to_f64()), f(self.k.to_f64()), f(self.v.to_f64()));
        let (h0, d_o, d_ht) = (
            f(self.h0.to_f64()),
            f(self.d_o.to_f64()),
            f(self.d_ht.to_f64()),
        );
        let p = if absolute {
            RetentionParams::new(p.gammas.clone(), p.scale.map(f64::abs))
        } else {
            p.clone()
        };
        match cu {
            None => reference::chunkwise_backward(&q, &k, &v, &p, 3, Some(&h0), &d_o, Some(&d_ht)),
            Some(cu) => reference::chunkwise_backward_varlen(
                &q,
                &k,
                &v,
                cu,
                &p,
                3,
                Some(&h0),
                &d_o,
                Some(&d_ht),
            ),
        }
        .unwrap()
    }
}

fn assert_close<T: Element>(what: &str, got: &HostTensor<T>, want: &HostTensor<f64>) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert!(
        want.data().iter().any(|&x| x != 0.0),
        "{what}: zero reference"
    );
    let (got, want) = (got.to_f64(), want.data());
    let e = if T::DTYPE == Some(Dtype::F32) {
        reference::max_rel_diff(got.data(), want)
    } else {
        reference::rel_rmse(got.data(), want)
    };
    let tol = if T::DTYPE == Some(Dtype::F32) {
        1e-5
    } else {
        5e-3
    };
    assert!(e <= tol, "{what}: {e:e} > {tol:e}");
}

/// Every gradient of `got` against the reference `want` (d log γ against `bound`).
fn assert_gradients<T: CpuElement>(
    what: &str,
    got: &Gradients<T>,
    want: &reference::Gradients,
    bound: &reference::Gradients,
) {
    assert_close(&format!("{what} dq"), &got.dq, &want.dq);
    assert_close(&format!("{what} dk"), &got.dk, &want.dk);
    assert_close(&format!("{what} dv"), &got.dv, &want.dv);
    let dh0 = got.dh0.as_ref().expect("a stateful form returns dH0");
    assert_close(&format!("{what} dh0"), dh0, &want.dh0);
    let (g, w, b) = (&got.dlog_gamma, &want.dlog_gamma, &bound.dlog_gamma);
    assert_eq!(g.shape(), w.shape(), "{what} dlog_gamma shape");
    for ((g, w), b) in g.data().iter().zip(w.data()).zip(b.data()) {
        assert!(*b > 0.0, "{what}: zero bound");
        let e = (f64::from(*g) - w).abs();
        assert!(
            e <= 1e-5 * b,
            "{what} dlog_gamma: got {g}, want {w} (Σ|terms| {b})"
        );
    }
}

fn params(h: usize) -> RetentionParams {
    RetentionParams::new(Gammas::retnet_sharded(h, 2).unwrap(), Some(0.3))
}

fn dense_forms<T: CpuElement>() {
    let dims = (2, 11, 2, 16, 8);
    let case = Case::<T>::new(dims, 2);
    let p = params(2);
    let ret = Retention::new(&Device::Cpu, p.clone()).unwrap();
    let want = case.reference(&p, None, false);
    let bound = case.reference(&p, None, true);
    let (h0, d_ht) = (Some(&case.h0), Some(&case.d_ht));

    let got = ret
        .chunkwise_backward(case.qkv(), 3, h0, &case.d_o, d_ht)
        .unwrap();
    assert_gradients("chunkwise C=3", &got, &want, &bound);
    let got = ret
        .recurrent_backward(case.qkv(), h0, &case.d_o, d_ht)
        .unwrap();
    assert_gradients("recurrent", &got, &want, &bound);

    // The training forward: its o and H_T are the forward's, its states feed the backward.
    let fwd = ret.chunkwise_for_training(case.qkv(), 3, h0).unwrap();
    let (o, ht) = ret.chunkwise(&case.q, &case.k, &case.v, 3, h0).unwrap();
    assert_eq!(fwd.o, o);
    assert_eq!(fwd.ht, ht);
    assert_eq!(fwd.states.shape(), &[2 * 4, 2, 16, 8]);
    let got = ret
        .chunkwise_backward_saved(case.qkv(), &fwd, &case.d_o, d_ht)
        .unwrap();
    assert_gradients("chunkwise saved", &got, &want, &bound);
}

#[test]
fn dense_forms_match_the_reference_f32() {
    dense_forms::<f32>();
}

#[test]
fn dense_forms_match_the_reference_bf16() {
    dense_forms::<bf16>();
}

/// Packed batches, one with an empty sequence (its dH0 is its dH_T).
#[test]
fn varlen_forms_match_the_reference() {
    let dims = (1, 12, 2, 8, 8);
    let case = Case::<f32>::new(dims, 3);
    let p = params(2);
    let ret = Retention::new(&Device::Cpu, p.clone()).unwrap();
    let (h0, d_ht) = (Some(&case.h0), Some(&case.d_ht));
    for bounds in [vec![0, 5, 6, 12], vec![0, 5, 5, 12]] {
        let cu = CuSeqlens::new(bounds.clone(), 12).unwrap();
        let want = case.reference(&p, Some(&cu), false);
        let bound = case.reference(&p, Some(&cu), true);
        let got = ret
            .chunkwise_varlen_backward(case.qkv(), &cu, (h0, 3), &case.d_o, d_ht)
            .unwrap();
        assert_gradients(&format!("chunkwise varlen {bounds:?}"), &got, &want, &bound);
        let got = ret
            .recurrent_varlen_backward(case.qkv(), &cu, h0, &case.d_o, d_ht)
            .unwrap();
        assert_gradients(&format!("recurrent varlen {bounds:?}"), &got, &want, &bound);
        if bounds[1] == bounds[2] {
            let per = 2 * 8 * 8;
            let dh0 = got.dh0.as_ref().unwrap();
            assert_eq!(dh0.data()[per..2 * per], case.d_ht.data()[per..2 * per]);
        }
    }
}

#[test]
fn parallel_and_epilogue_match_the_reference() {
    let case = Case::<f32>::new((1, 9, 2, 8, 8), 1);
    let p = params(2);
    let ret = Retention::new(&Device::Cpu, p.clone()).unwrap();
    let (q, k, v, d_o) = (
        case.q.to_f64(),
        case.k.to_f64(),
        case.v.to_f64(),
        case.d_o.to_f64(),
    );
    let want = reference::parallel_backward(&q, &k, &v, &p, &d_o).unwrap();
    let got = ret.parallel_backward(case.qkv(), &case.d_o).unwrap();
    assert!(got.dh0.is_none());
    assert_close("parallel dq", &got.dq, &want.dq);
    assert_close("parallel dk", &got.dk, &want.dk);
    assert_close("parallel dv", &got.dv, &want.dv);
    for (g, w) in got.dlog_gamma.data().iter().zip(want.dlog_gamma.data()) {
        assert!(
            (f64::from(*g) - w).abs() <= 1e-4 * w.abs().max(1.0),
            "{g} vs {w}"
        );
    }

    let (o, g, dy) = (&case.v, &case.k, &case.d_o);
    let want = reference::msr_epilogue_backward(&o.to_f64(), &g.to_f64(), 1e-6, &dy.to_f64());
    let want = want.unwrap();
    let got = ret.msr_epilogue_backward(o, g, 1e-6, dy).unwrap();
    assert_close("epilogue do", &got.d_o, &want.d_o);
    assert_close("epilogue dg", &got.dg, &want.dg);
}

#[test]
fn bad_shapes_are_typed_errors() {
    let case = Case::<f32>::new((1, 6, 2, 8, 4), 1);
    let ret = Retention::new(&Device::Cpu, params(2)).unwrap();
    let short_do = input::<f32>(vec![1, 5, 2, 4], 9);
    let err = ret.chunkwise_backward(case.qkv(), 2, None, &short_do, None);
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { ref tensor, .. }) if tensor == "d_o"),
        "{err:?}"
    );
    let bad_ht = input::<f32>(vec![2, 2, 8, 4], 9);
    let err = ret.chunkwise_backward(case.qkv(), 2, None, &case.d_o, Some(&bad_ht));
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { .. })),
        "{err:?}"
    );
    let err = ret.chunkwise_backward(case.qkv(), 0, None, &case.d_o, None);
    assert!(matches!(err, Err(RetentionError::ZeroChunk)), "{err:?}");
    let err = ret.parallel_backward(case.qkv(), &short_do);
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { .. })),
        "{err:?}"
    );
    // Saved states of another chunk size do not fit.
    let mut fwd = ret.chunkwise_for_training(case.qkv(), 2, None).unwrap();
    fwd.chunk = 4;
    let err = ret.chunkwise_backward_saved(case.qkv(), &fwd, &case.d_o, None);
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn gpu_like_devices_refuse_with_a_typed_error() {
    let case = Case::<f32>::new((1, 4, 2, 8, 8), 1);
    let device = Device::Emulated(kernel_gen::Arch::Sm80);
    let ret = Retention::new(&device, params(2)).unwrap();
    // The GPU keeps chunk states only for the two-phase forward's chunks.
    match ret.chunkwise_for_training(case.qkv(), 2, None) {
        Err(RetentionError::Unsupported { what, reason, .. }) => {
            assert!(what.contains("chunkwise_for_training"), "{what}");
            assert!(reason.contains("C in {32, 64}"), "{reason}");
        }
        other => panic!("chunk 2: {other:?}"),
    }
    // The epilogue's backward has its GPU kernel: it runs there and meets the reference.
    let (o, dy) = (&case.v, &case.v);
    let got = ret.msr_epilogue_backward(o, o, 1e-6, dy).unwrap();
    let want =
        reference::msr_epilogue_backward(&o.to_f64(), &o.to_f64(), 1e-6, &dy.to_f64()).unwrap();
    for (name, g, w) in [("do", &got.d_o, &want.d_o), ("dg", &got.dg, &want.dg)] {
        let e = reference::max_rel_diff(g.to_f64().data(), w.data());
        assert!(e <= 1e-5, "{device} epilogue {name}: {e:e}");
    }
}

/// On the emulated GPU, `chunkwise_backward` runs kernel-gen's chunkwise-backward kernels
/// through the device API (`chunkwise_backward_into`; kernel chunk 64, while the user's chunk
/// 3 gives the same gradients) and meets the reference with the CPU forms' tolerances, for
/// f32 and bf16, with H0, dH_T, a sharded head offset (runtime γ) and a partial last chunk.
#[test]
fn emulated_chunkwise_backward_matches_the_reference() {
    fn check<T: CpuElement>() {
        let case = Case::<T>::new((2, 70, 2, 16, 8), 2);
        let p = params(2);
        let device = Device::Emulated(kernel_gen::Arch::Sm80);
        let ret = Retention::new(&device, p.clone()).unwrap();
        let want = case.reference(&p, None, false);
        let bound = case.reference(&p, None, true);
        let (h0, d_ht) = (Some(&case.h0), Some(&case.d_ht));
        let got = ret
            .chunkwise_backward(case.qkv(), 3, h0, &case.d_o, d_ht)
            .unwrap();
        assert_gradients(&format!("emulated {:?}", T::DTYPE), &got, &want, &bound);
        let err = ret.chunkwise_backward(case.qkv(), 0, h0, &case.d_o, d_ht);
        assert!(matches!(err, Err(RetentionError::ZeroChunk)), "{err:?}");
    }
    check::<f32>();
    check::<bf16>();
}

/// On the emulated GPU the recurrent backward (dense and varlen) and the chunkwise varlen
/// backward run the chunkwise-backward kernels (one launch per kernel over every packed
/// sequence) and meet the f64 reference recurrent and varlen backwards with the CPU forms'
/// tolerances: sequences of length 1, 0 (dH0 = dH_T) and C ∤ len, H0 and dH_T given or not.
#[test]
fn emulated_recurrent_and_varlen_backward_match_the_reference() {
    fn check<T: CpuElement>() {
        let p = params(2);
        let device = Device::Emulated(kernel_gen::Arch::Sm90);
        let ret = Retention::new(&device, p.clone()).unwrap();
        let dense = Case::<T>::new((2, 37, 2, 16, 8), 2);
        let (q, k, v, d_o) = (
            dense.q.to_f64(),
            dense.k.to_f64(),
            dense.v.to_f64(),
            dense.d_o.to_f64(),
        );
        let (h0, d_ht) = (dense.h0.to_f64(), dense.d_ht.to_f64());
        let want =
            reference::recurrent_backward(&q, &k, &v, &p, Some(&h0), &d_o, Some(&d_ht)).unwrap();
        let bound = dense.reference(&p, None, true);
        let got = ret
            .recurrent_backward(dense.qkv(), Some(&dense.h0), &dense.d_o, Some(&dense.d_ht))
            .unwrap();
        assert_gradients(
            &format!("emulated recurrent {:?}", T::DTYPE),
            &got,
            &want,
            &bound,
        );

        let packed = Case::<T>::new((1, 75, 2, 16, 8), 4);
        for (bounds, states) in [
            (vec![0, 1, 1, 71, 75], true),
            (vec![0, 70, 70, 74, 75], false),
        ] {
            let cu = CuSeqlens::new(bounds.clone(), 75).unwrap();
            let want = packed.reference(&p, Some(&cu), false);
            let bound = packed.reference(&p, Some(&cu), true);
            let (h0, d_ht) = (Some(&packed.h0), Some(&packed.d_ht));
            let got = ret
                .chunkwise_varlen_backward(packed.qkv(), &cu, (h0, 5), &packed.d_o, d_ht)
                .unwrap();
            let what = format!("emulated chunkwise varlen {:?} {bounds:?}", T::DTYPE);
            assert_gradients(&what, &got, &want, &bound);
            let per = 2 * 16 * 8;
            let dh0 = got.dh0.as_ref().unwrap();
            assert_eq!(dh0.data()[per..2 * per], packed.d_ht.data()[per..2 * per]);
            if states {
                let got = ret
                    .recurrent_varlen_backward(packed.qkv(), &cu, h0, &packed.d_o, d_ht)
                    .unwrap();
                let what = format!("emulated recurrent varlen {:?} {bounds:?}", T::DTYPE);
                assert_gradients(&what, &got, &want, &bound);
            } else {
                let (q, k, v, d_o) = (
                    packed.q.to_f64(),
                    packed.k.to_f64(),
                    packed.v.to_f64(),
                    packed.d_o.to_f64(),
                );
                let want =
                    reference::recurrent_backward_varlen(&q, &k, &v, &cu, &p, None, &d_o, None)
                        .unwrap();
                let got = ret
                    .recurrent_varlen_backward(packed.qkv(), &cu, None, &packed.d_o, None)
                    .unwrap();
                let what = format!("emulated recurrent varlen, no states {:?}", T::DTYPE);
                assert_close(&format!("{what} dq"), &got.dq, &want.dq);
                assert_close(&format!("{what} dk"), &got.dk, &want.dk);
                assert_close(&format!("{what} dv"), &got.dv, &want.dv);
            }
        }
        let cu = CuSeqlens::new(vec![0, 30, 70], 70).unwrap();
        let err = ret.chunkwise_varlen_backward(dense.qkv(), &cu, (None, 5), &dense.d_o, None);
        assert!(
            matches!(err, Err(RetentionError::ShapeMismatch { .. })),
            "B = 2 is not a packed batch: {err:?}"
        );
    }
    check::<f32>();
    check::<bf16>();
}

/// The varlen device-tensor form on CPU tensors and on the emulated GPU writes exactly the
/// host form's gradients, uploads only the N + 1 boundaries and downloads nothing.
#[test]
fn device_tensor_varlen_backward_equals_the_host_form() {
    use retention::{DeviceTensor, Stream};
    for device in [Device::Cpu, Device::Emulated(kernel_gen::Arch::Sm80)] {
        let case = Case::<f32>::new((1, 12, 2, 8, 4), 3);
        let cu = CuSeqlens::new(vec![0, 1, 1, 12], 12).unwrap();
        let ret = Retention::new(&device, params(2)).unwrap();
        let (h0, d_ht) = (Some(&case.h0), Some(&case.d_ht));
        let want = ret
            .chunkwise_varlen_backward(case.qkv(), &cu, (h0, 5), &case.d_o, d_ht)
            .unwrap();
        let stream = Stream::new(&device).unwrap();
        let up = |t: &HostTensor<f32>| DeviceTensor::upload(ret.memory(), t, &stream).unwrap();
        let (q, k, v, d_o) = (up(&case.q), up(&case.k), up(&case.v), up(&case.d_o));
        let (h0, d_ht) = (up(&case.h0), up(&case.d_ht));
        let mut outs = Outputs::new(&ret, &device, (1, 12, 2, 8, 4), 3);
        let before = stream.transfers();
        let (qkv, upstream) = ((&q, &k, &v), (&d_o, Some(&d_ht)));
        let out = outs.gradients_into();
        ret.chunkwise_backward_varlen_into(qkv, &cu, Some(&h0), upstream, out, (5, Some(&stream)))
            .unwrap();
        let moved = stream.transfers().since(&before);
        if device != Device::Cpu {
            assert_eq!(moved.d2h_bytes, 0, "{device}");
            assert!(moved.h2d_bytes <= 4 * 4, "{device}: {moved:?}");
        }
        outs.assert_equal(&stream, &want, &device.to_string());
    }
}

/// On the emulated GPU `chunkwise_for_training` (C = 32, 64) returns the forward's o and H_T
/// and the f32 state entering every chunk — each the f64 reference chunkwise forward's final
/// state over the tokens before that chunk — within the forward's state tolerance (1e-5 max
/// relative; o 1e-5 f32, 5e-3 relative RMSE bf16), with and without H0, T = C·2 + 5 and
/// T < C (one chunk); and `chunkwise_backward_saved` from them gives exactly the recomputing
/// backward's gradients.
#[test]
fn emulated_chunkwise_for_training_keeps_the_reference_chunk_states() {
    fn check<T: CpuElement>(chunk: usize, t: usize, with_h0: bool) {
        let (b, h, k, v) = (2, 2, 16, 8);
        let case = Case::<T>::new((b, t, h, k, v), b);
        let p = params(h);
        let device = Device::Emulated(kernel_gen::Arch::Sm90);
        let ret = Retention::new(&device, p.clone()).unwrap();
        let h0 = with_h0.then_some(&case.h0);
        let got = ret.chunkwise_for_training(case.qkv(), chunk, h0).unwrap();
        let what = format!("{:?} C={chunk} T={t} h0={with_h0}", T::DTYPE);
        let (q, kk, vv) = (case.q.to_f64(), case.k.to_f64(), case.v.to_f64());
        let h0_64 = case.h0.to_f64();
        let (o, ht) = reference::chunkwise(&q, &kk, &vv, &p, chunk, h0.map(|_| &h0_64)).unwrap();
        assert_close(&format!("{what} o"), &got.o, &o);
        let e = reference::max_rel_diff(got.ht.to_f64().data(), ht.data());
        assert!(e <= 1e-5, "{what} ht: {e:e}");
        let per_row = t.div_ceil(chunk);
        assert_eq!(got.states.shape(), [b * per_row, h, k, v], "{what}");
        let state = h * k * v;
        for i in 0..per_row {
            // The state entering chunk i: the forward's H_T over the first i·C tokens.
            let want: Vec<f64> = if i == 0 {
                if with_h0 {
                    h0_64.data().to_vec()
                } else {
                    vec![0.0; b * state]
                }
            } else {
                let prefix = |x: &HostTensor<f64>, d: usize| {
                    let data = (0..b)
                        .flat_map(|r| x.data()[r * t * h * d..][..i * chunk * h * d].to_vec())
                        .collect();
                    HostTensor::new(vec![b, i * chunk, h, d], data).unwrap()
                };
                let (pq, pk, pv) = (prefix(&q, k), prefix(&kk, k), prefix(&vv, v));
                let h0 = h0.map(|_| &h0_64);
                reference::chunkwise(&pq, &pk, &pv, &p, chunk, h0)
                    .unwrap()
                    .1
                    .data()
                    .to_vec()
            };
            let states = got.states.to_f64();
            for r in 0..b {
                let got_i = &states.data()[(r * per_row + i) * state..][..state];
                let want_i = &want[r * state..][..state];
                let e = reference::max_rel_diff(got_i, want_i);
                assert!(e <= 1e-5, "{what} row {r} chunk {i}: {e:e}");
            }
        }
        let d_ht = Some(&case.d_ht);
        let saved = ret
            .chunkwise_backward_saved(case.qkv(), &got, &case.d_o, d_ht)
            .unwrap();
        let direct = ret
            .chunkwise_backward(case.qkv(), chunk, h0, &case.d_o, d_ht)
            .unwrap();
        if with_h0 {
            assert_eq!(saved, direct, "{what}");
        } else {
            assert_eq!(
                (saved.dq, saved.dk, saved.dv),
                (direct.dq, direct.dk, direct.dv)
            );
        }
    }
    check::<f32>(32, 69, true);
    check::<f32>(64, 20, false);
    check::<bf16>(64, 133, true);
}

/// The device-tensor form on CPU tensors and on the emulated GPU writes exactly the host
/// form's gradients on the same device, and checks its outputs' shapes.
#[test]
fn device_tensor_backward_equals_the_host_form() {
    device_tensor_backward_on(&Device::Cpu);
    device_tensor_backward_on(&Device::Emulated(kernel_gen::Arch::Sm90));
}

fn device_tensor_backward_on(device: &Device) {
    use retention::{DeviceTensor, GradientsInto, Stream};
    let case = Case::<f32>::new((2, 7, 2, 8, 4), 2);
    let ret = Retention::new(device, params(2)).unwrap();
    let want = ret
        .chunkwise_backward(case.qkv(), 3, Some(&case.h0), &case.d_o, Some(&case.d_ht))
        .unwrap();
    let stream = Stream::new(device).unwrap();
    let up = |t: &HostTensor<f32>| DeviceTensor::upload(ret.memory(), t, &stream).unwrap();
    let (q, k, v, d_o, h0, d_ht) = (
        up(&case.q),
        up(&case.k),
        up(&case.v),
        up(&case.d_o),
        up(&case.h0),
        up(&case.d_ht),
    );
    let mut outs = Outputs::new(&ret, device, (2, 7, 2, 8, 4), 2);
    let out = outs.gradients_into();
    let before = stream.transfers();
    let at = (3, Some(&stream));
    ret.chunkwise_backward_into((&q, &k, &v), Some(&h0), (&d_o, Some(&d_ht)), out, at)
        .unwrap();
    // d log γ is reduced on the device: nothing comes back to the host.
    assert_eq!(stream.transfers().since(&before).d2h_bytes, 0, "{device}");
    outs.assert_equal(&stream, &want, &device.to_string());

    let mut short =
        DeviceTensor::zeros(ret.memory(), device, retention::DeviceDtype::F32, &[3]).unwrap();
    let out = GradientsInto {
        dlog_gamma: Some(&mut short),
        ..outs.gradients_into()
    };
    let err = ret.chunkwise_backward_into((&q, &k, &v), None, (&d_o, None), out, (3, None));
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { ref tensor, .. }) if tensor == "dlog_gamma"),
        "{err:?}"
    );
}

/// Zeroed f32 device outputs of a backward: dq, dk `[B,T,H,K]`, dv `[B,T,H,V]`, dh0
/// `[rows,H,K,V]`, d log γ `[H]`.
struct Outputs {
    dq: retention::DeviceTensor,
    dk: retention::DeviceTensor,
    dv: retention::DeviceTensor,
    dh0: retention::DeviceTensor,
    dlg: retention::DeviceTensor,
}

impl Outputs {
    fn new(
        ret: &Retention,
        device: &Device,
        (b, t, h, k, v): (usize, usize, usize, usize, usize),
        rows: usize,
    ) -> Self {
        use retention::{DeviceDtype, DeviceTensor};
        let zeros = |shape: &[usize]| {
            DeviceTensor::zeros(ret.memory(), device, DeviceDtype::F32, shape).unwrap()
        };
        Self {
            dq: zeros(&[b, t, h, k]),
            dk: zeros(&[b, t, h, k]),
            dv: zeros(&[b, t, h, v]),
            dh0: zeros(&[rows, h, k, v]),
            dlg: zeros(&[h]),
        }
    }

    fn gradients_into(&mut self) -> retention::GradientsInto<'_> {
        retention::GradientsInto {
            dq: &mut self.dq,
            dk: &mut self.dk,
            dv: &mut self.dv,
            dh0: Some(&mut self.dh0),
            dlog_gamma: Some(&mut self.dlg),
        }
    }

    /// Every output equals the host form's `want`, bit for bit.
    fn assert_equal(&self, stream: &retention::Stream, want: &Gradients<f32>, what: &str) {
        let down = |t: &retention::DeviceTensor| t.download::<f32>(stream).unwrap();
        assert_eq!(down(&self.dq), want.dq, "{what}");
        assert_eq!(down(&self.dk), want.dk, "{what}");
        assert_eq!(down(&self.dv), want.dv, "{what}");
        assert_eq!(&down(&self.dh0), want.dh0.as_ref().unwrap(), "{what}");
        assert_eq!(down(&self.dlg), want.dlog_gamma, "{what}");
    }
}

/// dh0 and dlog_gamma are optional outputs of the device-tensor backward: without them, on
/// the CPU and on the emulated GPU, dq, dk and dv are bit-for-bit those of the call that asks
/// for everything (skipping d log γ changes nothing else), and asking for dh0 alone gives the
/// same dh0.
#[test]
fn device_tensor_backward_optional_outputs() {
    for device in [Device::Cpu, Device::Emulated(kernel_gen::Arch::Sm80)] {
        optional_outputs_on(&device);
    }
}

fn optional_outputs_on(device: &Device) {
    use retention::{DeviceTensor, GradientsInto, Stream};
    let case = Case::<f32>::new((1, 9, 2, 8, 4), 1);
    let ret = Retention::new(device, params(2)).unwrap();
    let stream = Stream::default_for(device).unwrap();
    let [q, k, v, d_o, h0, d_ht] = case.upload(&ret, &stream);
    let down = |t: &DeviceTensor| t.download::<f32>(&stream).unwrap();
    // (want dh0, want dlog_gamma) → (dq, dk, dv, dh0 if asked, dlog_gamma if asked)
    let run = |want_dh0: bool, want_dlog: bool| {
        let [mut dq, mut dk, mut dv, mut dh0, mut dlg] = zero_grads(&ret, (1, 9, 2, 8, 4));
        let out = GradientsInto {
            dq: &mut dq,
            dk: &mut dk,
            dv: &mut dv,
            dh0: want_dh0.then_some(&mut dh0),
            dlog_gamma: want_dlog.then_some(&mut dlg),
        };
        ret.chunkwise_backward_into((&q, &k, &v), Some(&h0), (&d_o, Some(&d_ht)), out, (4, None))
            .unwrap();
        (down(&dq), down(&dk), down(&dv), down(&dh0), down(&dlg))
    };
    let all = run(true, true);
    assert!(
        all.3.data().iter().any(|&x| x != 0.0),
        "{device}: dh0 written"
    );
    assert!(
        all.4.data().iter().any(|&x| x != 0.0),
        "{device}: dlog_gamma written"
    );
    let none = run(false, false);
    assert_eq!(
        (&none.0, &none.1, &none.2),
        (&all.0, &all.1, &all.2),
        "{device}"
    );
    assert!(
        none.3.data().iter().all(|&x| x == 0.0),
        "{device}: dh0 untouched"
    );
    assert!(
        none.4.data().iter().all(|&x| x == 0.0),
        "{device}: dlog_gamma untouched"
    );
    let dh0_only = run(true, false);
    assert_eq!(
        (&dh0_only.0, &dh0_only.1, &dh0_only.2, &dh0_only.3),
        (&all.0, &all.1, &all.2, &all.3),
        "{device}"
    );
    let dlog_only = run(false, true);
    assert_eq!(dlog_only.4, all.4, "{device}: d log γ without dh0");
}

/// The parallel backward on device tensors (`parallel_backward_into`), on the CPU and the
/// emulated GPU: exactly the host form's dq, dk, dv and d log γ on the same device; skipping
/// d log γ leaves dq, dk, dv bit-identical; a dh0 output is a typed error.
#[test]
fn parallel_backward_into_equals_the_host_form() {
    use retention::{DeviceTensor, GradientsInto, Stream};
    for device in [Device::Cpu, Device::Emulated(kernel_gen::Arch::Sm80)] {
        let case = Case::<f32>::new((1, 9, 2, 8, 4), 1);
        let ret = Retention::new(&device, params(2)).unwrap();
        let want = ret.parallel_backward(case.qkv(), &case.d_o).unwrap();
        let stream = Stream::default_for(&device).unwrap();
        let [q, k, v, d_o, ..] = case.upload(&ret, &stream);
        let down = |t: &DeviceTensor| t.download::<f32>(&stream).unwrap();
        let run = |want_dlog: bool, want_dh0: bool| {
            let [mut dq, mut dk, mut dv, mut dh0, mut dlg] = zero_grads(&ret, (1, 9, 2, 8, 4));
            let out = GradientsInto {
                dq: &mut dq,
                dk: &mut dk,
                dv: &mut dv,
                dh0: want_dh0.then_some(&mut dh0),
                dlog_gamma: want_dlog.then_some(&mut dlg),
            };
            ret.parallel_backward_into((&q, &k, &v), &d_o, out, Some(&stream))
                .map(|()| (down(&dq), down(&dk), down(&dv), down(&dlg)))
        };
        let all = run(true, false).unwrap();
        assert_eq!(
            (&all.0, &all.1, &all.2),
            (&want.dq, &want.dk, &want.dv),
            "{device}"
        );
        assert_eq!(all.3, want.dlog_gamma, "{device}");
        let bare = run(false, false).unwrap();
        assert_eq!(
            (&bare.0, &bare.1, &bare.2),
            (&want.dq, &want.dk, &want.dv),
            "{device}"
        );
        assert!(
            bare.3.data().iter().all(|&x| x == 0.0),
            "{device}: dlog_gamma untouched"
        );
        let err = run(true, true);
        assert!(
            matches!(err, Err(RetentionError::Unsupported { .. })),
            "{device}: {err:?}"
        );
    }
}

/// Zeroed f32 gradient outputs on `ret`'s device for (B, T, H, K, V): dq, dk, dv, dH0, d log γ.
fn zero_grads(
    ret: &Retention,
    (b, t, h, k, v): (usize, usize, usize, usize, usize),
) -> [retention::DeviceTensor; 5] {
    let zeros = |shape: &[usize]| {
        let f32t = retention::DeviceDtype::F32;
        retention::DeviceTensor::zeros(ret.memory(), ret.device(), f32t, shape).unwrap()
    };
    [
        zeros(&[b, t, h, k]),
        zeros(&[b, t, h, k]),
        zeros(&[b, t, h, v]),
        zeros(&[b, h, k, v]),
        zeros(&[h]),
    ]
}
