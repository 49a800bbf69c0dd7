//! The C ABI's dtypes, varlen, devices and streams, pool snapshots, and the header's list of
//! entries: f16/bf16 and varlen forwards equal the facade's; the emulated device (the GPU code
//! path on host pointers) meets the f32 tolerance against the reference; a CUDA stream on a
//! host device is a typed refusal; a restored snapshot continues the sequence exactly.

#![allow(clippy::borrow_as_ptr)]
mod common;

use std::ptr;

use common::{create, create_on, desc, facade, input, last_error};
use half::{bf16, f16};
use retention::{CpuElement, CuSeqlens, reference};
use retention_capi::{
    RetentionStatePool, RetentionStatus, retention_chunkwise_forward,
    retention_chunkwise_varlen_forward, retention_destroy, retention_set_stream,
    retention_state_pool_alloc, retention_state_pool_create, retention_state_pool_destroy,
    retention_state_pool_restore, retention_state_pool_snapshot, retention_state_pool_step,
};

const H: usize = 2;

/// The chunkwise forward of `T` through the C ABI on `device`: (o, H_T).
fn chunkwise_c<T: CpuElement>(device: i32, s: [usize; 5], chunk: u32) -> (Vec<T>, Vec<f32>) {
    let [b, t, h, dk, dv] = s;
    let (q, k, v) = (
        input::<T>(&[b, t, h, dk], 7),
        input::<T>(&[b, t, h, dk], 5),
        input::<T>(&[b, t, h, dv], 4),
    );
    let (mut qb, mut kb, mut vb) = (q.into_data(), k.into_data(), v.into_data());
    let (mut o, mut ht) = (
        vec![T::default(); b * t * h * dv],
        vec![0f32; b * h * dk * dv],
    );
    let (tq, tk, tv) = (
        desc(&mut qb, &[b, t, h, dk]),
        desc(&mut kb, &[b, t, h, dk]),
        desc(&mut vb, &[b, t, h, dv]),
    );
    let (to, tht) = (desc(&mut o, &[b, t, h, dv]), desc(&mut ht, &[b, h, dk, dv]));
    let hd = create_on(device, h as u32);
    // SAFETY: every descriptor points at a live buffer of its shape.
    unsafe {
        let st = retention_chunkwise_forward(hd, &tq, &tk, &tv, ptr::null(), chunk, &to, &tht);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        assert_eq!(retention_destroy(hd), RetentionStatus::Ok);
    }
    (o, ht)
}

fn facade_chunkwise<T: CpuElement>(s: [usize; 5], chunk: usize) -> (Vec<T>, Vec<f32>) {
    let [b, t, h, dk, dv] = s;
    let (q, k, v) = (
        input::<T>(&[b, t, h, dk], 7),
        input::<T>(&[b, t, h, dk], 5),
        input::<T>(&[b, t, h, dv], 4),
    );
    let (o, ht) = facade(h).chunkwise(&q, &k, &v, chunk, None).unwrap();
    (o.into_data(), ht.into_data())
}

#[test]
fn f16_and_bf16_forwards_equal_the_facade() {
    let s = [2, 9, H, 4, 3];
    assert_eq!(chunkwise_c::<f16>(0, s, 4), facade_chunkwise::<f16>(s, 4));
    assert_eq!(chunkwise_c::<bf16>(0, s, 4), facade_chunkwise::<bf16>(s, 4));
}

#[test]
fn emulated_device_meets_the_f32_tolerance() {
    // The GPU code path (PTX on the emulator) on the caller's host memory, against the f64
    // reference: max relative error 1e-5 (ARCHITECTURE §4).
    let s = [1, 7, H, 16, 16];
    let (o, ht) = chunkwise_c::<f32>(2, s, 4);
    let (q, k, v) = (
        input::<f32>(&[1, 7, H, 16], 7).to_f64(),
        input::<f32>(&[1, 7, H, 16], 5).to_f64(),
        input::<f32>(&[1, 7, H, 16], 4).to_f64(),
    );
    let params = facade(H).params().clone();
    let (want_o, want_s) = reference::chunkwise(&q, &k, &v, &params, 4, None).unwrap();
    let wide = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    assert!(reference::max_rel_diff(&wide(&o), want_o.data()) < 1e-5);
    assert!(reference::max_rel_diff(&wide(&ht), want_s.data()) < 1e-5);
}

#[test]
fn varlen_forward_equals_the_facade() {
    let (total, bounds, dk, dv) = (9, [0i64, 2, 9], 4, 3);
    let (q, k, v) = (
        input::<bf16>(&[1, total, H, dk], 7),
        input::<bf16>(&[1, total, H, dk], 5),
        input::<bf16>(&[1, total, H, dv], 4),
    );
    let cu = CuSeqlens::from_i64(&bounds, total).unwrap();
    let (want_o, want_s) = facade(H)
        .chunkwise_varlen((&q, &k, &v), &cu, None, 3)
        .unwrap();
    let (mut qb, mut kb, mut vb) = (q.into_data(), k.into_data(), v.into_data());
    let (mut o, mut ht) = (
        vec![bf16::ZERO; total * H * dv],
        vec![0f32; 2 * H * dk * dv],
    );
    let (tq, tk, tv) = (
        desc(&mut qb, &[1, total, H, dk]),
        desc(&mut kb, &[1, total, H, dk]),
        desc(&mut vb, &[1, total, H, dv]),
    );
    let (to, tht) = (
        desc(&mut o, &[1, total, H, dv]),
        desc(&mut ht, &[2, H, dk, dv]),
    );
    let h = create(H as u32);
    // SAFETY: live buffers of the described shapes; `bounds` has 3 values.
    unsafe {
        let st = retention_chunkwise_varlen_forward(
            h,
            &tq,
            &tk,
            &tv,
            bounds.as_ptr(),
            3,
            ptr::null(),
            3,
            &to,
            &tht,
        );
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
    assert_eq!(
        (o.as_slice(), ht.as_slice()),
        (want_o.data(), want_s.data())
    );
}

#[test]
fn host_devices_refuse_a_cuda_stream_with_a_reason() {
    let h = create(H as u32);
    let mut fake = 0u8;
    // SAFETY: `h` is live; the stream pointer is never dereferenced on the CPU.
    unsafe {
        assert_eq!(
            retention_set_stream(h, ptr::null_mut()),
            RetentionStatus::Ok
        );
        let st = retention_set_stream(h, (&raw mut fake).cast());
        assert_eq!(st, RetentionStatus::Unsupported);
        assert!(last_error().contains("CUDA streams"), "{}", last_error());
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
}

#[test]
fn a_restored_snapshot_continues_the_sequence() {
    let (dk, dv, steps) = (4, 3, 3);
    let h = create(H as u32);
    let mut p: *mut RetentionStatePool = ptr::null_mut();
    let (mut a, mut b) = (0u64, 0u64);
    let token = |i: usize, d: usize, m: usize| input::<f32>(&[1, H, d], m + i).into_data();
    // Step slot a once per token, recording outputs of the last `steps` tokens after a
    // snapshot; restore the snapshot into slot b and replay them.
    let step = |p: *mut RetentionStatePool, slot: u64, i: usize| {
        let (mut q, mut k, mut v) = (token(i, dk, 7), token(i, dk, 5), token(i, dv, 4));
        let mut o = vec![0f32; H * dv];
        let (tq, tk, tv) = (
            desc(&mut q, &[1, H, dk]),
            desc(&mut k, &[1, H, dk]),
            desc(&mut v, &[1, H, dv]),
        );
        let to = desc(&mut o, &[1, H, dv]);
        // SAFETY: live pool and buffers of the described shapes.
        let st = unsafe { retention_state_pool_step(p, 0, &slot, 1, &tq, &tk, &tv, &to) };
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        o
    };
    let mut snap = vec![0f32; H * dk * dv];
    let tsnap = desc(&mut snap, &[1, H, dk, dv]);
    // SAFETY: `h` is live; out-pointers writable.
    unsafe {
        let st = retention_state_pool_create(h, H as u32, dk as u32, dv as u32, 1, 2, &raw mut p);
        assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
        assert_eq!(
            retention_state_pool_alloc(p, &raw mut a),
            RetentionStatus::Ok
        );
        assert_eq!(
            retention_state_pool_alloc(p, &raw mut b),
            RetentionStatus::Ok
        );
    }
    for i in 0..4 {
        step(p, a, i);
    }
    // SAFETY: live pool; `tsnap` describes `snap`.
    unsafe {
        assert_eq!(
            retention_state_pool_snapshot(p, a, &tsnap),
            RetentionStatus::Ok
        );
    }
    let after_a: Vec<Vec<f32>> = (4..4 + steps).map(|i| step(p, a, i)).collect();
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            retention_state_pool_restore(p, b, &tsnap),
            RetentionStatus::Ok
        );
        // A snapshot of the wrong shape is refused by name.
        let mut small = vec![0f32; H * dk * dv];
        let tsmall = desc(&mut small, &[1, H, dk, dv - 1]);
        let st = retention_state_pool_restore(p, b, &tsmall);
        assert_eq!(st, RetentionStatus::BadShape);
        assert!(last_error().contains("state"), "{}", last_error());
        assert_eq!(
            retention_state_pool_snapshot(p, 99, &tsnap),
            RetentionStatus::InvalidArgument
        );
    }
    let after_b: Vec<Vec<f32>> = (4..4 + steps).map(|i| step(p, b, i)).collect();
    assert_eq!(after_a, after_b);
    // SAFETY: live pool and handle.
    unsafe {
        assert_eq!(retention_state_pool_destroy(p), RetentionStatus::Ok);
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
}

#[test]
fn the_header_declares_exactly_the_exported_entries() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = std::fs::read_to_string(root.join("../include/retention.h")).unwrap();
    // Every `retention_NAME(` in the header is a declaration.
    let mut declared: Vec<String> = header
        .match_indices("retention_")
        .filter_map(|(i, _)| {
            let name: String = header[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            header[i + name.len()..].starts_with('(').then_some(name)
        })
        .collect();
    let mut exported = Vec::new();
    for f in std::fs::read_dir(root.join("src")).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.split("extern \"C\" fn ").nth(1) {
                exported.push(rest.split('(').next().unwrap().to_string());
            }
        }
    }
    declared.sort();
    declared.dedup();
    exported.sort();
    assert_eq!(declared, exported);
}

#[test]
fn decode_steps_on_the_emulated_device_meet_the_f32_tolerance() {
    // The GPU decode kernel on the caller's host memory, staged and stepped through the pool,
    // against the CPU pool: max relative error 1e-5 per token.
    let (dk, dv, tokens) = (16, 16, 3);
    let outputs = |device: i32| {
        let h = create_on(device, H as u32);
        let mut p: *mut RetentionStatePool = ptr::null_mut();
        let mut slot = 0u64;
        // SAFETY: `h` is live; out-pointers writable.
        unsafe {
            let st =
                retention_state_pool_create(h, H as u32, dk as u32, dv as u32, 1, 2, &raw mut p);
            assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
            assert_eq!(
                retention_state_pool_alloc(p, &raw mut slot),
                RetentionStatus::Ok
            );
        }
        let outs: Vec<Vec<f32>> = (0..tokens)
            .map(|i| {
                let mut q = input::<f32>(&[1, H, dk], 7 + i).into_data();
                let mut k = input::<f32>(&[1, H, dk], 5 + i).into_data();
                let mut v = input::<f32>(&[1, H, dv], 4 + i).into_data();
                let mut o = vec![0f32; H * dv];
                let (tq, tk) = (desc(&mut q, &[1, H, dk]), desc(&mut k, &[1, H, dk]));
                let (tv, to) = (desc(&mut v, &[1, H, dv]), desc(&mut o, &[1, H, dv]));
                // SAFETY: live pool and buffers of the described shapes.
                let st = unsafe { retention_state_pool_step(p, 0, &slot, 1, &tq, &tk, &tv, &to) };
                assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
                o
            })
            .collect();
        // SAFETY: live pool and handle.
        unsafe {
            assert_eq!(retention_state_pool_destroy(p), RetentionStatus::Ok);
            assert_eq!(retention_destroy(h), RetentionStatus::Ok);
        }
        outs
    };
    let (cpu, emu) = (outputs(0), outputs(2));
    let wide = |x: &[f32]| x.iter().map(|&a| f64::from(a)).collect::<Vec<_>>();
    for (c, e) in cpu.iter().zip(&emu) {
        assert!(reference::max_rel_diff(&wide(e), &wide(c)) < 1e-5);
    }
}
