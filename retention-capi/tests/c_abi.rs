//! The C ABI from Rust (results equal the facade's, every error path has a code and a
//! message) and from C (`tests/c/{smoke,training,entries}.c` compiled against
//! `include/retention.h` with -Wall -Wextra -Werror and run).

// Test calls pass `&descriptor` where C passes `&desc`; the borrow outlives each call.
#![allow(clippy::borrow_as_ptr)]
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::ptr;

use common::{create, desc, last_error, ramp};
use retention::{Device, Gammas, HostTensor, Retention, RetentionParams};
use retention_capi::{
    RetentionDtype, RetentionStatus, RetentionTensor, retention_chunkwise_forward,
    retention_create, retention_destroy, retention_parallel_forward, retention_recurrent_forward,
};

const B: usize = 2;
const T: usize = 7;
const H: usize = 2;
const K: usize = 4;
const V: usize = 3;

#[test]
fn forwards_equal_the_facade() {
    let (mut q, mut k, mut v) = (
        ramp(B * T * H * K, 7),
        ramp(B * T * H * K, 5),
        ramp(B * T * H * V, 4),
    );
    let mut h0 = ramp(B * H * K * V, 3);
    let ret = Retention::new(
        &Device::Cpu,
        RetentionParams::new(Gammas::retnet(H).unwrap(), None),
    )
    .unwrap();
    let hq = HostTensor::new(vec![B, T, H, K], q.clone()).unwrap();
    let hk = HostTensor::new(vec![B, T, H, K], k.clone()).unwrap();
    let hv = HostTensor::new(vec![B, T, H, V], v.clone()).unwrap();
    let hh0 = HostTensor::new(vec![B, H, K, V], h0.clone()).unwrap();
    let (want_o, want_s) = ret.chunkwise(&hq, &hk, &hv, 4, Some(&hh0)).unwrap();
    let (want_ro, want_rs) = ret.recurrent(&hq, &hk, &hv, Some(&hh0)).unwrap();
    let want_p = ret.parallel(&hq, &hk, &hv).unwrap();

    let h = create(H as u32);
    let (tq, tk, tv) = (
        desc(&mut q, &[B, T, H, K]),
        desc(&mut k, &[B, T, H, K]),
        desc(&mut v, &[B, T, H, V]),
    );
    let th0 = desc(&mut h0, &[B, H, K, V]);
    let (mut o, mut s) = (vec![0f32; B * T * H * V], vec![0f32; B * H * K * V]);
    let (to, ts) = (desc(&mut o, &[B, T, H, V]), desc(&mut s, &[B, H, K, V]));
    // SAFETY: every descriptor points at a live buffer of its shape.
    unsafe {
        assert_eq!(
            retention_chunkwise_forward(h, &tq, &tk, &tv, &th0, 4, &to, &ts),
            RetentionStatus::Ok
        );
    }
    assert_eq!((o.as_slice(), s.as_slice()), (want_o.data(), want_s.data()));
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            retention_recurrent_forward(h, &tq, &tk, &tv, &th0, &to, &ts),
            RetentionStatus::Ok
        );
    }
    assert_eq!(
        (o.as_slice(), s.as_slice()),
        (want_ro.data(), want_rs.data())
    );
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            retention_parallel_forward(h, &tq, &tk, &tv, &to),
            RetentionStatus::Ok
        );
    }
    assert_eq!(o.as_slice(), want_p.data());
    assert_eq!(last_error(), "");
    // SAFETY: `h` is live.
    assert_eq!(unsafe { retention_destroy(h) }, RetentionStatus::Ok);
}

#[test]
fn every_error_path_has_a_code_and_a_message() {
    let (mut q, mut k, mut v) = (
        ramp(B * T * H * K, 7),
        ramp(B * T * H * K, 5),
        ramp(B * T * H * V, 4),
    );
    let mut o = vec![0f32; B * T * H * V];
    let h = create(H as u32);
    let (tq, tk, tv, to) = (
        desc(&mut q, &[B, T, H, K]),
        desc(&mut k, &[B, T, H, K]),
        desc(&mut v, &[B, T, H, V]),
        desc(&mut o, &[B, T, H, V]),
    );
    let check = |got: RetentionStatus, want: RetentionStatus| {
        assert_eq!(got, want);
        assert!(!last_error().is_empty(), "no message for {want:?}");
    };
    let mut bad_dtype = tq;
    bad_dtype.dtype = RetentionDtype::Bf16 as i32;
    let mut bad_rank = tq;
    bad_rank.ndim = 3;
    let mut bad_stride = tq;
    bad_stride.strides[2] = 2;
    let mut zero = tq;
    zero.shape[1] = 0;
    let small_k = desc(&mut k, &[B, T, H, K - 1]);
    let mut null_data = tq;
    null_data.data = ptr::null_mut();
    // SAFETY: every non-null descriptor points at a live buffer at least as large as its shape.
    unsafe {
        check(
            retention_chunkwise_forward(h, ptr::null(), &tk, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::NullPointer,
        );
        check(
            retention_chunkwise_forward(h, &null_data, &tk, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::NullPointer,
        );
        check(
            retention_chunkwise_forward(h, &bad_dtype, &tk, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::BadDtype,
        );
        check(
            retention_chunkwise_forward(h, &bad_rank, &tk, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::BadShape,
        );
        check(
            retention_chunkwise_forward(h, &zero, &tk, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::BadShape,
        );
        check(
            retention_chunkwise_forward(h, &bad_stride, &tk, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::NonContiguous,
        );
        check(
            retention_chunkwise_forward(h, &tq, &small_k, &tv, ptr::null(), 4, &to, ptr::null()),
            RetentionStatus::BadShape,
        );
        check(
            retention_chunkwise_forward(h, &tq, &tk, &tv, ptr::null(), 0, &to, ptr::null()),
            RetentionStatus::InvalidArgument,
        );
        check(
            retention_parallel_forward(h, &tq, &tk, &tv, &tq),
            RetentionStatus::BadShape,
        );
        check(
            retention_parallel_forward(ptr::null(), &tq, &tk, &tv, &to),
            RetentionStatus::InvalidHandle,
        );
        let mut out = ptr::null_mut();
        check(
            retention_create(1, 0, 2, 0, 0.0, &raw mut out),
            RetentionStatus::UnsupportedDevice,
        );
        // Zero heads is a zero dimension: the library's error kind picks the code.
        check(
            retention_create(0, 0, 0, 0, 0.0, &raw mut out),
            RetentionStatus::BadShape,
        );
        check(
            retention_create(0, 0, 2, 0, 0.0, ptr::null_mut()),
            RetentionStatus::NullPointer,
        );
        // A foreign pointer is caught by the tag.
        let mut junk = [0u64; 64];
        check(
            retention_parallel_forward(junk.as_mut_ptr().cast(), &tq, &tk, &tv, &to),
            RetentionStatus::InvalidHandle,
        );
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
}

/// The static library cargo built for this test run: beside the test binary in
/// `target/<profile>/deps/` under `cargo test`, or uplifted to `target/<profile>/` by
/// `cargo build`.
fn static_library() -> Option<PathBuf> {
    // tests run from target/<profile>/deps/
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let profile = deps.parent()?.to_path_buf();
    [deps, profile]
        .into_iter()
        .map(|d| d.join("libretention_capi.a"))
        .find(|lib| lib.exists())
}

/// Compile `tests/c/NAME.c` against the header and the static library, run it, return stdout.
fn compile_and_run(cc: &str, lib: &std::path::Path, name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = lib
        .parent()
        .expect("a library directory")
        .join(format!("retention_capi_{name}"));
    let status = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("../include"))
        .arg(root.join(format!("tests/c/{name}.c")))
        .arg(lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success(), "compiling {name}.c failed");
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{name} failed: {text}");
    text
}

#[test]
fn c_programs_compiled_against_the_header_run() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("notice: no C compiler ({cc}); skipping the C tests");
        return;
    }
    let lib = static_library().expect("cargo builds libretention_capi.a with the tests");
    for name in ["smoke", "training", "entries"] {
        let text = compile_and_run(&cc, &lib, name);
        assert!(text.starts_with("ok"), "{name}: {text}");
        eprintln!("{name}: {}", text.trim());
    }
}

#[test]
fn pool_steps_equal_the_recurrent_forward() {
    use retention_capi::{
        RetentionStatePool, retention_state_pool_alloc, retention_state_pool_create,
        retention_state_pool_destroy, retention_state_pool_free, retention_state_pool_step,
    };
    let (mut q, mut k, mut v) = (ramp(T * H * K, 7), ramp(T * H * K, 5), ramp(T * H * V, 4));
    let h = create(H as u32);
    let mut o_ref = vec![0f32; T * H * V];
    let (tq, tk, tv, to) = (
        desc(&mut q, &[1, T, H, K]),
        desc(&mut k, &[1, T, H, K]),
        desc(&mut v, &[1, T, H, V]),
        desc(&mut o_ref, &[1, T, H, V]),
    );
    let mut p: *mut RetentionStatePool = ptr::null_mut();
    let mut slot = 0u64;
    // SAFETY: live buffers of the described shapes; `p` and `slot` writable.
    unsafe {
        assert_eq!(
            retention_recurrent_forward(h, &tq, &tk, &tv, ptr::null(), &to, ptr::null()),
            RetentionStatus::Ok
        );
        assert_eq!(
            retention_state_pool_create(h, H as u32, K as u32, V as u32, 1, 2, &raw mut p),
            RetentionStatus::Ok
        );
        assert_eq!(
            retention_state_pool_alloc(p, &raw mut slot),
            RetentionStatus::Ok
        );
    }
    let rank3 = |t: &RetentionTensor, off: usize, d: usize| {
        let mut r = *t;
        // SAFETY: `off` stays inside the token-major buffer.
        r.data = unsafe { t.data.cast::<f32>().add(off) }.cast();
        r.ndim = 3;
        r.shape = [1, H as i64, d as i64, 0];
        r.strides = [(H * d) as i64, d as i64, 1, 0];
        r
    };
    let mut o_t = vec![0f32; H * V];
    for t in 0..T {
        let (sq, sk, sv) = (
            rank3(&tq, t * H * K, K),
            rank3(&tk, t * H * K, K),
            rank3(&tv, t * H * V, V),
        );
        let mut so = sv;
        so.data = o_t.as_mut_ptr().cast();
        // SAFETY: rank-3 views of live buffers; `slot` is one id.
        unsafe {
            assert_eq!(
                retention_state_pool_step(p, 0, &slot, 1, &sq, &sk, &sv, &so),
                RetentionStatus::Ok,
                "{}",
                last_error()
            );
        }
        let want = &o_ref[t * H * V..(t + 1) * H * V];
        for (a, b) in o_t.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "token {t}: {a} vs {b}");
        }
    }
    // SAFETY: live pool and handle.
    unsafe {
        assert_eq!(retention_state_pool_free(p, slot), RetentionStatus::Ok);
        assert_eq!(
            retention_state_pool_free(p, slot),
            RetentionStatus::InvalidArgument
        );
        assert!(!last_error().is_empty());
        assert_eq!(retention_state_pool_destroy(p), RetentionStatus::Ok);
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
}

#[test]
fn gated_epilogue_equals_the_facade() {
    use retention_capi::retention_gated_epilogue_forward;
    let (mut o, mut g) = (ramp(B * T * H * V, 7), ramp(B * T * H * V, 4));
    let ret = Retention::new(
        &Device::Cpu,
        RetentionParams::new(Gammas::retnet(H).unwrap(), None),
    )
    .unwrap();
    let want = ret
        .msr_epilogue(
            &HostTensor::new(vec![B, T, H, V], o.clone()).unwrap(),
            &HostTensor::new(vec![B, T, H, V], g.clone()).unwrap(),
            1e-6,
        )
        .unwrap();
    let h = create(H as u32);
    let mut y = vec![0f32; B * T * H * V];
    let (to, tg, ty) = (
        desc(&mut o, &[B, T, H, V]),
        desc(&mut g, &[B, T, H, V]),
        desc(&mut y, &[B, T, H, V]),
    );
    // SAFETY: live buffers of the described shapes.
    unsafe {
        assert_eq!(
            retention_gated_epilogue_forward(h, &to, &tg, 1e-6, &ty),
            RetentionStatus::Ok
        );
        assert_eq!(retention_destroy(h), RetentionStatus::Ok);
    }
    assert_eq!(y.as_slice(), want.data());
}
