//! The backward entries and the epilogue on a DEVICE handle (the emulated GPU, kind 2: the
//! GPU code path of the runtime on host pointers, no host tensors in between): chunkwise and
//! parallel backward and the epilogue forward/backward meet the f64 reference within
//! ARCHITECTURE §4's tolerances (f32: 1e-5 max relative; bf16: 5e-3 relative RMSE; d log γ:
//! 1e-5 of the sum of its terms' magnitudes), as the CPU handle's results do; NULL dh0 and
//! dlog_gamma leave dq, dk, dv unchanged; misuse gives typed statuses with messages.

#![allow(clippy::borrow_as_ptr)]
mod common;

use std::ptr;

use common::{create_on, desc, input, last_error};
use half::{bf16, f16};
use retention::{CpuElement, Dtype, Gammas, HostTensor, RetentionParams, reference};
use retention_capi::{
    RetentionGradients, RetentionStatus, RetentionTensor, retention_chunkwise_backward,
    retention_chunkwise_varlen_backward, retention_destroy, retention_gated_epilogue_backward,
    retention_gated_epilogue_forward, retention_parallel_backward,
};

const H: usize = 2;
const EMULATED: i32 = 2;
const CPU: i32 = 0;

/// B, T, H, K, V: a partial last chunk at chunk 4, two heads.
const SHAPE: [usize; 5] = [1, 9, H, 8, 4];

/// One backward's outputs, as the C caller's buffers.
struct Grads<T> {
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
    dh0: Vec<f32>,
    dlg: Vec<f32>,
}

/// Which backward to call, and which optional outputs to ask for.
#[derive(Clone, Copy)]
struct Call {
    parallel: bool,
    dh0: bool,
    dlog_gamma: bool,
}

/// The inputs: q, k, v, dO of `T`; H0, dH_T f32.
fn inputs<T: CpuElement>() -> [HostTensor<f64>; 6] {
    let [b, t, h, k, v] = SHAPE;
    let r = |s: &[usize], m| input::<T>(s, m).to_f64();
    let r32 = |s: &[usize], m| input::<f32>(s, m).to_f64();
    [
        r(&[b, t, h, k], 7),
        r(&[b, t, h, k], 5),
        r(&[b, t, h, v], 4),
        r(&[b, t, h, v], 6),
        r32(&[b, h, k, v], 3),
        r32(&[b, h, k, v], 9),
    ]
}

/// Run `call` through the C ABI on a handle of `device`.
fn backward_c<T: CpuElement>(device: i32, call: Call) -> Grads<T> {
    let [b, t, h, k, v] = SHAPE;
    let (qk, vs, st) = ([b, t, h, k], [b, t, h, v], [b, h, k, v]);
    let ins = inputs::<T>();
    let bufs: Vec<Vec<T>> = ins[..4]
        .iter()
        .map(|x| {
            HostTensor::<T>::from_f64(x.shape().to_vec(), x.data())
                .unwrap()
                .into_data()
        })
        .collect();
    let states: Vec<Vec<f32>> = ins[4..]
        .iter()
        .map(|x| x.data().iter().map(|&y| y as f32).collect())
        .collect();
    let mut g = Grads {
        dq: vec![T::default(); b * t * h * k],
        dk: vec![T::default(); b * t * h * k],
        dv: vec![T::default(); b * t * h * v],
        dh0: vec![0f32; b * h * k * v],
        dlg: vec![0f32; h],
    };
    let [mut q, mut kk, mut vv, mut d_o]: [Vec<T>; 4] = bufs.try_into().ok().unwrap();
    let (tq, tk, tv, tdo) = (
        desc(&mut q, &qk),
        desc(&mut kk, &qk),
        desc(&mut vv, &vs),
        desc(&mut d_o, &vs),
    );
    let [mut h0, mut d_ht]: [Vec<f32>; 2] = states.try_into().ok().unwrap();
    let (th0, tdht) = (desc(&mut h0, &st), desc(&mut d_ht, &st));
    let outs = [
        desc(&mut g.dq, &qk),
        desc(&mut g.dk, &qk),
        desc(&mut g.dv, &vs),
    ];
    let (tdh0, tdlg) = (desc(&mut g.dh0, &st), desc(&mut g.dlg, &[h]));
    let opt = |on: bool, t: &RetentionTensor| if on { ptr::from_ref(t) } else { ptr::null() };
    let grads = RetentionGradients {
        dq: &outs[0],
        dk: &outs[1],
        dv: &outs[2],
        dh0: opt(call.dh0, &tdh0),
        dlog_gamma: opt(call.dlog_gamma, &tdlg),
    };
    let hd = create_on(device, h as u32);
    // SAFETY: every descriptor points at a live host buffer of its shape (the emulated
    // device's memory is host memory).
    unsafe {
        let st = if call.parallel {
            retention_parallel_backward(hd, &tq, &tk, &tv, &tdo, &grads)
        } else {
            retention_chunkwise_backward(hd, &tq, &tk, &tv, &th0, 4, &tdo, &tdht, &grads)
        };
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        assert_eq!(retention_destroy(hd), RetentionStatus::Ok);
    }
    g
}

/// The f64 reference of `call` on `ins` (dH0 empty for the parallel form).
fn reference_of(ins: &[HostTensor<f64>; 6], parallel: bool) -> reference::Gradients {
    let p = RetentionParams::new(Gammas::retnet(H).unwrap(), None);
    let [q, k, v, d_o, h0, d_ht] = ins;
    if parallel {
        let g = reference::parallel_backward(q, k, v, &p, d_o).unwrap();
        return reference::Gradients {
            dq: g.dq,
            dk: g.dk,
            dv: g.dv,
            dh0: HostTensor::zeros(vec![0]),
            dlog_gamma: g.dlog_gamma,
        };
    }
    reference::chunkwise_backward(q, k, v, &p, 4, Some(h0), d_o, Some(d_ht)).unwrap()
}

fn close<T: CpuElement>(what: &str, got: &[T], want: &HostTensor<f64>) {
    let got: Vec<f64> = got.iter().map(|x| x.to_f64()).collect();
    assert!(
        want.data().iter().any(|&x| x != 0.0),
        "{what}: zero reference"
    );
    let (e, tol) = if T::DTYPE == Some(Dtype::F32) {
        (reference::max_rel_diff(&got, want.data()), 1e-5)
    } else {
        (reference::rel_rmse(&got, want.data()), 5e-3)
    };
    assert!(e <= tol, "{what}: {e:e} > {tol:e}");
}

/// Every asked-for gradient of `device`'s C call against the reference.
fn check<T: CpuElement>(device: i32, parallel: bool) {
    let what = format!("device {device} {:?} parallel={parallel}", T::DTYPE);
    let call = Call {
        parallel,
        dh0: !parallel,
        dlog_gamma: true,
    };
    let g = backward_c::<T>(device, call);
    let ins = inputs::<T>();
    let want = reference_of(&ins, parallel);
    let abs = ins.clone().map(|x| {
        HostTensor::new(
            x.shape().to_vec(),
            x.data().iter().map(|y| y.abs()).collect(),
        )
        .unwrap()
    });
    let bound = reference_of(&abs, parallel);
    close(&format!("{what} dq"), &g.dq, &want.dq);
    close(&format!("{what} dk"), &g.dk, &want.dk);
    close(&format!("{what} dv"), &g.dv, &want.dv);
    if !parallel {
        close(&format!("{what} dh0"), &g.dh0, &want.dh0);
    }
    for h in 0..H {
        let (got, w, b) = (
            f64::from(g.dlg[h]),
            want.dlog_gamma.data()[h],
            bound.dlog_gamma.data()[h],
        );
        assert!(b > 0.0, "{what}: zero bound");
        assert!(
            (got - w).abs() <= 1e-5 * b,
            "{what} dlog_gamma[{h}]: {got} vs {w} (bound {b})"
        );
    }
}

#[test]
fn emulated_backwards_meet_the_reference_as_the_cpu_ones_do() {
    for device in [CPU, EMULATED] {
        check::<f32>(device, false);
        check::<f32>(device, true);
    }
    check::<bf16>(EMULATED, false);
    check::<bf16>(EMULATED, true);
}

#[test]
fn null_dh0_and_dlog_gamma_leave_dq_dk_dv_unchanged_on_the_emulator() {
    for parallel in [false, true] {
        let all = backward_c::<f32>(
            EMULATED,
            Call {
                parallel,
                dh0: !parallel,
                dlog_gamma: true,
            },
        );
        let bare = backward_c::<f32>(
            EMULATED,
            Call {
                parallel,
                dh0: false,
                dlog_gamma: false,
            },
        );
        assert_eq!((&bare.dq, &bare.dk, &bare.dv), (&all.dq, &all.dk, &all.dv));
        assert!(
            bare.dh0.iter().chain(&bare.dlg).all(|&x| x == 0.0),
            "untouched"
        );
    }
}

#[test]
fn device_handles_give_typed_statuses_for_misuse() {
    let [b, t, h, k, v] = SHAPE;
    let mut buf = vec![0f32; b * t * h * k.max(v)];
    let mut wrong = vec![f16::ZERO; b * t * h * k];
    let tq = desc(&mut buf, &[b, t, h, k]);
    let tv = tq;
    let tv = RetentionTensor {
        shape: [b as i64, t as i64, h as i64, v as i64],
        ..tv
    };
    let tv = RetentionTensor {
        strides: [(t * h * v) as i64, (h * v) as i64, v as i64, 1],
        ..tv
    };
    let bad_dtype = desc(&mut wrong, &[b, t, h, k]); // f16 where the inputs are f32
    let grads = |dq: &RetentionTensor| RetentionGradients {
        dq,
        dk: &tq,
        dv: &tv,
        dh0: ptr::null(),
        dlog_gamma: ptr::null(),
    };
    let e = create_on(EMULATED, h as u32);
    // SAFETY: every descriptor points at a live buffer at least as large as its shape; the
    // failing calls stop at their checks before any access.
    unsafe {
        let g = grads(&bad_dtype);
        let st =
            retention_chunkwise_backward(e, &tq, &tq, &tv, ptr::null(), 4, &tv, ptr::null(), &g);
        assert_eq!(st, RetentionStatus::BadDtype, "{}", last_error());
        assert!(last_error().contains("dq"), "{}", last_error());
        let g = grads(&tv);
        let st = retention_parallel_backward(e, &tq, &tq, &tv, &tv, &g);
        assert_eq!(st, RetentionStatus::BadShape, "{}", last_error());
        assert!(last_error().contains("dq"), "{}", last_error());
        let g = grads(&tq);
        let st =
            retention_chunkwise_backward(e, &tq, &tq, &tv, ptr::null(), 0, &tv, ptr::null(), &g);
        assert_eq!(st, RetentionStatus::InvalidArgument, "{}", last_error());
        let null_data = RetentionTensor {
            data: ptr::null_mut(),
            ..tq
        };
        let st = retention_parallel_backward(e, &null_data, &tq, &tv, &tv, &g);
        assert_eq!(st, RetentionStatus::NullPointer, "{}", last_error());
        let st = retention_gated_epilogue_backward(e, &tv, &tv, 1e-6, &tv, &tq, &tv);
        assert_eq!(st, RetentionStatus::BadShape, "{}", last_error());
        // The varlen backward has no device form yet: refused before any pointer is read.
        let bounds = [0i64, t as i64];
        let st = retention_chunkwise_varlen_backward(
            e,
            &tq,
            &tq,
            &tv,
            bounds.as_ptr(),
            2,
            ptr::null(),
            4,
            &tv,
            ptr::null(),
            &g,
        );
        assert_eq!(st, RetentionStatus::Unsupported, "{}", last_error());
        assert!(last_error().contains("CPU only"), "{}", last_error());
        assert_eq!(retention_destroy(e), RetentionStatus::Ok);
    }
}

#[test]
fn emulated_epilogue_forward_and_backward_meet_the_reference() {
    let s = [2, 3, H, 40];
    let (o, g, dy) = (
        input::<f32>(&s, 7),
        input::<f32>(&s, 4),
        input::<f32>(&s, 5),
    );
    let y_ref = reference::msr_epilogue(&o.to_f64(), &g.to_f64(), 1e-6).unwrap();
    let want =
        reference::msr_epilogue_backward(&o.to_f64(), &g.to_f64(), 1e-6, &dy.to_f64()).unwrap();
    let (mut ob, mut gb, mut dyb) = (o.into_data(), g.into_data(), dy.into_data());
    let n = ob.len();
    let (mut y, mut d_o, mut dg) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    let (to, tg, tdy) = (desc(&mut ob, &s), desc(&mut gb, &s), desc(&mut dyb, &s));
    let (ty, tdo, tdg) = (desc(&mut y, &s), desc(&mut d_o, &s), desc(&mut dg, &s));
    let e = create_on(EMULATED, H as u32);
    // SAFETY: live host buffers of the described shapes (emulated device memory is host).
    unsafe {
        let st = retention_gated_epilogue_forward(e, &to, &tg, 1e-6, &ty);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        let st = retention_gated_epilogue_backward(e, &to, &tg, 1e-6, &tdy, &tdo, &tdg);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        assert_eq!(retention_destroy(e), RetentionStatus::Ok);
    }
    close("epilogue y", &y, &y_ref);
    close("epilogue do", &d_o, &want.d_o);
    close("epilogue dg", &dg, &want.dg);
}
