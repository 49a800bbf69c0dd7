//! The backward entries of the C ABI equal the facade's (exactly: the same CPU kernels run),
//! in f32 and bf16, dense, varlen and parallel, and the epilogue backward; other devices and
//! misuse give a typed status with a message (device handles: `c_abi_device_training`).

#![allow(clippy::borrow_as_ptr)]
mod common;

use std::ptr;

use common::{create, desc, facade, input, last_error};
use half::bf16;
use retention::{CpuElement, CuSeqlens, Gradients};
use retention_capi::{
    RetentionGradients, RetentionStatus, RetentionTensor, retention_chunkwise_backward,
    retention_chunkwise_varlen_backward, retention_destroy, retention_gated_epilogue_backward,
    retention_parallel_backward,
};

const H: usize = 2;
const K: usize = 4;
const V: usize = 3;

/// The gradients struct over the five descriptors of [`Outs::descs`].
fn grads_of(d: &[RetentionTensor; 5]) -> RetentionGradients {
    RetentionGradients {
        dq: &d[0],
        dk: &d[1],
        dv: &d[2],
        dh0: &d[3],
        dlog_gamma: &d[4],
    }
}

/// Output buffers of one backward, shaped like `want`.
struct Outs<T: CpuElement> {
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    dh0: Vec<f32>,
    dlg: Vec<f32>,
}

impl<T: CpuElement> Outs<T> {
    fn like(want: &Gradients<T>, dh0_len: usize) -> Self {
        Self {
            dq: vec![T::default(); want.dq.len()],
            dk: vec![T::default(); want.dk.len()],
            dv: vec![T::default(); want.dv.len()],
            dh0: vec![0.0; dh0_len],
            dlg: vec![0.0; H],
        }
    }

    /// Descriptors of dq, dk `[.., K]` (shape `qk`), dv (shape `vs`), dh0 (shape `st`) and
    /// dlog_gamma `[H]`.
    fn descs(&mut self, qk: &[usize], vs: &[usize], st: &[usize]) -> [RetentionTensor; 5] {
        [
            desc(&mut self.dq, qk),
            desc(&mut self.dk, qk),
            desc(&mut self.dv, vs),
            desc(&mut self.dh0, st),
            desc(&mut self.dlg, &[H]),
        ]
    }

    fn assert_eq(&self, want: &Gradients<T>) {
        assert_eq!(self.dq, want.dq.data(), "dq");
        assert_eq!(self.dk, want.dk.data(), "dk");
        assert_eq!(self.dv, want.dv.data(), "dv");
        if let Some(dh0) = &want.dh0 {
            assert_eq!(self.dh0, dh0.data(), "dh0");
        }
        assert_eq!(self.dlg, want.dlog_gamma.data(), "dlog_gamma");
    }
}

#[test]
fn chunkwise_backward_equals_the_facade() {
    let (b, t) = (2, 7);
    let (q, k, v) = (
        input::<f32>(&[b, t, H, K], 7),
        input::<f32>(&[b, t, H, K], 5),
        input::<f32>(&[b, t, H, V], 4),
    );
    let (h0, d_o, d_ht) = (
        input::<f32>(&[b, H, K, V], 3),
        input::<f32>(&[b, t, H, V], 6),
        input::<f32>(&[b, H, K, V], 9),
    );
    let want = facade(H)
        .chunkwise_backward((&q, &k, &v), 3, Some(&h0), &d_o, Some(&d_ht))
        .unwrap();
    let mut o = Outs::like(&want, b * H * K * V);
    let (mut qb, mut kb, mut vb) = (q.into_data(), k.into_data(), v.into_data());
    let (mut h0b, mut dob, mut dhtb) = (h0.into_data(), d_o.into_data(), d_ht.into_data());
    let (tq, tk, tv) = (
        desc(&mut qb, &[b, t, H, K]),
        desc(&mut kb, &[b, t, H, K]),
        desc(&mut vb, &[b, t, H, V]),
    );
    let (th0, tdo, tdht) = (
        desc(&mut h0b, &[b, H, K, V]),
        desc(&mut dob, &[b, t, H, V]),
        desc(&mut dhtb, &[b, H, K, V]),
    );
    let d = o.descs(&[b, t, H, K], &[b, t, H, V], &[b, H, K, V]);
    let grads = grads_of(&d);
    let h = create(H as u32);
    // SAFETY: every descriptor points at a live buffer of its shape.
    unsafe {
        let st = retention_chunkwise_backward(h, &tq, &tk, &tv, &th0, 3, &tdo, &tdht, &grads);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
    }
    o.assert_eq(&want);
    // SAFETY: `h` is live.
    unsafe { assert_eq!(retention_destroy(h), RetentionStatus::Ok) };
}

#[test]
fn parallel_backward_in_bf16_equals_the_facade() {
    let (b, t) = (1, 6);
    let (q, k, v, d_o) = (
        input::<bf16>(&[b, t, H, K], 7),
        input::<bf16>(&[b, t, H, K], 5),
        input::<bf16>(&[b, t, H, V], 4),
        input::<bf16>(&[b, t, H, V], 6),
    );
    let want = facade(H).parallel_backward((&q, &k, &v), &d_o).unwrap();
    let mut o = Outs::like(&want, b * H * K * V);
    let (mut qb, mut kb, mut vb, mut dob) =
        (q.into_data(), k.into_data(), v.into_data(), d_o.into_data());
    let (tq, tk, tv, tdo) = (
        desc(&mut qb, &[b, t, H, K]),
        desc(&mut kb, &[b, t, H, K]),
        desc(&mut vb, &[b, t, H, V]),
        desc(&mut dob, &[b, t, H, V]),
    );
    let d = o.descs(&[b, t, H, K], &[b, t, H, V], &[b, H, K, V]);
    let mut grads = grads_of(&d);
    let h = create(H as u32);
    // SAFETY: every descriptor points at a live buffer of its shape.
    unsafe {
        // The parallel form has no initial state: asking for dh0 is a misuse.
        let st = retention_parallel_backward(h, &tq, &tk, &tv, &tdo, &grads);
        assert_eq!(st, RetentionStatus::InvalidArgument);
        assert!(last_error().contains("no initial"), "{}", last_error());
        grads.dh0 = ptr::null();
        let st = retention_parallel_backward(h, &tq, &tk, &tv, &tdo, &grads);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        // A gradient of another dtype than the inputs is refused.
        let mut wrong = vec![0f32; b * t * H * K];
        let twrong = desc(&mut wrong, &[b, t, H, K]);
        grads.dq = &twrong;
        let st = retention_parallel_backward(h, &tq, &tk, &tv, &tdo, &grads);
        assert_eq!(st, RetentionStatus::BadDtype);
        assert!(last_error().contains("dq"), "{}", last_error());
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
    o.assert_eq(&want);
}

#[test]
fn varlen_backward_equals_the_facade() {
    let (total, bounds) = (9, [0i64, 4, 9]);
    let (q, k, v, d_o) = (
        input::<f32>(&[1, total, H, K], 7),
        input::<f32>(&[1, total, H, K], 5),
        input::<f32>(&[1, total, H, V], 4),
        input::<f32>(&[1, total, H, V], 6),
    );
    let cu = CuSeqlens::from_i64(&bounds, total).unwrap();
    let want = facade(H)
        .chunkwise_varlen_backward((&q, &k, &v), &cu, (None, 2), &d_o, None)
        .unwrap();
    let mut o = Outs::like(&want, 2 * H * K * V);
    let (mut qb, mut kb, mut vb, mut dob) =
        (q.into_data(), k.into_data(), v.into_data(), d_o.into_data());
    let (tq, tk, tv, tdo) = (
        desc(&mut qb, &[1, total, H, K]),
        desc(&mut kb, &[1, total, H, K]),
        desc(&mut vb, &[1, total, H, V]),
        desc(&mut dob, &[1, total, H, V]),
    );
    let d = o.descs(&[1, total, H, K], &[1, total, H, V], &[2, H, K, V]);
    let grads = grads_of(&d);
    let h = create(H as u32);
    let null = ptr::null();
    // SAFETY: every descriptor points at a live buffer of its shape; `bounds` has 3 values.
    unsafe {
        let st = retention_chunkwise_varlen_backward(
            h,
            &tq,
            &tk,
            &tv,
            bounds.as_ptr(),
            3,
            null,
            2,
            &tdo,
            null,
            &grads,
        );
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        o.assert_eq(&want);
        // Boundaries not ending at ΣT are an invalid argument with a message.
        let bad = [0i64, 4, 8];
        let st = retention_chunkwise_varlen_backward(
            h,
            &tq,
            &tk,
            &tv,
            bad.as_ptr(),
            3,
            null,
            2,
            &tdo,
            null,
            &grads,
        );
        assert_eq!(st, RetentionStatus::InvalidArgument);
        assert!(!last_error().is_empty());
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
}

#[test]
fn epilogue_backward_equals_the_facade() {
    let s = [2, 3, H, V];
    let (o, g, dy) = (
        input::<f32>(&s, 7),
        input::<f32>(&s, 4),
        input::<f32>(&s, 5),
    );
    let want = facade(H).msr_epilogue_backward(&o, &g, 1e-6, &dy).unwrap();
    let (mut ob, mut gb, mut dyb) = (o.into_data(), g.into_data(), dy.into_data());
    let (mut d_o, mut dg) = (vec![0f32; ob.len()], vec![0f32; ob.len()]);
    let (to, tg, tdy) = (desc(&mut ob, &s), desc(&mut gb, &s), desc(&mut dyb, &s));
    let (tdo, tdg) = (desc(&mut d_o, &s), desc(&mut dg, &s));
    let h = create(H as u32);
    // SAFETY: live buffers of the described shapes.
    unsafe {
        let st = retention_gated_epilogue_backward(h, &to, &tg, 1e-6, &tdy, &tdo, &tdg);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
    assert_eq!(
        (d_o.as_slice(), dg.as_slice()),
        (want.d_o.data(), want.dg.data())
    );
}
