//! The backward of the chunkwise (dense and varlen) and parallel forms (ARCHITECTURE §7):
//! dq, dk, dv in the input dtype, dH0 and d log γ in f32. The dense chunkwise and the parallel
//! backward borrow the caller's memory as tensors of the handle's device and run the
//! runtime's device forms on the handle's stream (no copy on a GPU-like device; the CPU
//! kernels work on host copies). The varlen backward has a host-tensor form only: it refuses
//! other devices before reading any pointer, and copies on the CPU.

use half::{bf16, f16};
use retention::{CpuElement, CuSeqlens, DeviceDtype, Gradients, GradientsInto};

use crate::forward::{CQkv, cu_seqlens, qkv_views};
use crate::handle::{RetentionHandle, handle};
use crate::status::{Failure, RetentionStatus, guard, non_null};
use crate::tensor::{RetentionTensor, View, optional, view};

/// Where a backward writes: dq, dk `[B, T, H, K]`, dv `[B, T, H, V]` (input dtype, required),
/// dh0 `[B, H, K, V]` (`[N, H, K, V]` varlen) and dlog_gamma `[H]` (f32, each may be NULL to
/// skip it; dh0 must be NULL for the parallel form, which has no initial state).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RetentionGradients {
    /// dL/dq.
    pub dq: *const RetentionTensor,
    /// dL/dk.
    pub dk: *const RetentionTensor,
    /// dL/dv.
    pub dv: *const RetentionTensor,
    /// dL/dH0, or NULL.
    pub dh0: *const RetentionTensor,
    /// dL/dlog γ per head, or NULL.
    pub dlog_gamma: *const RetentionTensor,
}

/// The chunk the recurrent form's backward runs at (any chunk gives the same gradients).
const RECURRENT_CHUNK: usize = 64;

/// Which backward to run.
enum Form {
    Chunkwise(usize),
    Varlen(CuSeqlens, usize),
    Parallel,
}

/// The checked views of one backward call.
struct Call {
    qkv: [View; 3],
    h0: Option<View>,
    d_o: View,
    d_ht: Option<View>,
    out: [View; 3],
    dh0: Option<View>,
    dlog_gamma: Option<View>,
}

/// Check every descriptor of a call.
///
/// # Safety
/// Every pointer null or readable; `grads` null or a readable `RetentionGradients`.
unsafe fn call(
    qkv: CQkv,
    h0: *const RetentionTensor,
    (d_o, d_ht): (*const RetentionTensor, *const RetentionTensor),
    grads: *const RetentionGradients,
) -> Result<Call, Failure> {
    non_null(grads, "grads")?;
    // SAFETY: the caller's preconditions.
    unsafe {
        let g = *grads;
        Ok(Call {
            qkv: qkv_views(qkv)?,
            h0: optional(h0, "initial_state", 4)?,
            d_o: view(d_o, "d_o", 4)?,
            d_ht: optional(d_ht, "d_final_state", 4)?,
            out: [
                view(g.dq, "dq", 4)?,
                view(g.dk, "dk", 4)?,
                view(g.dv, "dv", 4)?,
            ],
            dh0: optional(g.dh0, "dh0", 4)?,
            dlog_gamma: optional(g.dlog_gamma, "dlog_gamma", 1)?,
        })
    }
}

/// Read, run `form`'s backward at element type `T`, write.
///
/// # Safety
/// The views describe live host memory (inputs readable, outputs writable, not aliasing).
unsafe fn run<T: CpuElement>(r: &RetentionHandle, c: &Call, form: &Form) -> Result<(), Failure> {
    // SAFETY: the caller's precondition; every read and write checks dtype and shape first.
    unsafe {
        let [q, k, v] = [
            c.qkv[0].read::<T>()?,
            c.qkv[1].read::<T>()?,
            c.qkv[2].read::<T>()?,
        ];
        let read_f32 = |x: &Option<View>| x.as_ref().map(|x| x.read::<f32>()).transpose();
        let (h0, d_ht) = (read_f32(&c.h0)?, read_f32(&c.d_ht)?);
        let d_o = c.d_o.read::<T>()?;
        let qkv = (&q, &k, &v);
        let g: Gradients<T> = match form {
            Form::Chunkwise(n) => {
                r.ret
                    .chunkwise_backward(qkv, *n, h0.as_ref(), &d_o, d_ht.as_ref())?
            }
            Form::Varlen(cu, n) => {
                r.ret
                    .chunkwise_varlen_backward(qkv, cu, (h0.as_ref(), *n), &d_o, d_ht.as_ref())?
            }
            Form::Parallel => r.ret.parallel_backward(qkv, &d_o)?,
        };
        c.out[0].write(&g.dq)?;
        c.out[1].write(&g.dk)?;
        c.out[2].write(&g.dv)?;
        if let (Some(out), Some(dh0)) = (&c.dh0, &g.dh0) {
            out.write::<f32>(dh0)?;
        }
        if let Some(out) = &c.dlog_gamma {
            out.write::<f32>(&g.dlog_gamma)?;
        }
    }
    Ok(())
}

/// Run a dense form (chunkwise or parallel) on the caller's memory through the runtime's
/// device API, on the handle's stream.
///
/// # Safety
/// The views describe live memory of the handle's device (inputs readable, outputs writable,
/// not aliasing inputs or each other).
unsafe fn run_on_device(r: &RetentionHandle, c: &Call, form: &Form) -> Result<(), Failure> {
    let d = r.device();
    // SAFETY: the caller's precondition; the runtime checks every tensor's device, dtype and
    // shape before touching its memory.
    unsafe {
        let [q, k, v] = c.qkv.each_ref().map(|x| x.borrow(d));
        let borrow = |x: &Option<View>| x.as_ref().map(|x| x.borrow(d));
        let (h0, d_ht, d_o) = (borrow(&c.h0), borrow(&c.d_ht), c.d_o.borrow(d));
        let [mut dq, mut dk, mut dv] = c.out.each_ref().map(|x| x.borrow(d));
        let (mut dh0, mut dlog_gamma) = (borrow(&c.dh0), borrow(&c.dlog_gamma));
        let out = GradientsInto {
            dq: &mut dq,
            dk: &mut dk,
            dv: &mut dv,
            dh0: dh0.as_mut(),
            dlog_gamma: dlog_gamma.as_mut(),
        };
        let (qkv, upstream) = ((&q, &k, &v), (&d_o, d_ht.as_ref()));
        match form {
            Form::Chunkwise(n) => {
                r.ret
                    .chunkwise_backward_into(qkv, h0.as_ref(), upstream, out, (*n, r.stream()))?;
            }
            _ => r.ret.parallel_backward_into(qkv, &d_o, out, r.stream())?,
        }
    }
    // d log γ's partials were scratch from the runtime's pool.
    if c.dlog_gamma.is_some() {
        r.wait_for_caller_stream()?;
    }
    Ok(())
}

/// Shared body: checks, the device dispatch (varlen: CPU only), the dtype dispatch.
///
/// # Safety
/// As [`retention_chunkwise_backward`].
unsafe fn backward(
    h: *const RetentionHandle,
    c: &Call,
    form: &Form,
    op: &str,
) -> Result<(), Failure> {
    // SAFETY: the caller's precondition.
    let r = unsafe { handle(h)? };
    if matches!(form, Form::Parallel) && (c.h0.is_some() || c.d_ht.is_some() || c.dh0.is_some()) {
        return Err(Failure::new(
            RetentionStatus::InvalidArgument,
            "the parallel form has no initial or final state: pass NULL for them and dh0",
        ));
    }
    if !matches!(form, Form::Varlen(..)) {
        // SAFETY: the views describe memory of the handle's device, per the caller's contract.
        return unsafe { run_on_device(r, c, form) };
    }
    r.cpu_only(op)?;
    // SAFETY: a CPU handle: the views are host memory, per the caller's contract.
    unsafe {
        match c.qkv[0].dtype {
            DeviceDtype::F16 => run::<f16>(r, c, form),
            DeviceDtype::Bf16 => run::<bf16>(r, c, form),
            DeviceDtype::F32 => run::<f32>(r, c, form),
            DeviceDtype::U32 => Err(Failure::new(RetentionStatus::BadDtype, "q: dtype u32")),
        }
    }
}

/// Gradients of [`crate::retention_chunkwise_forward`] (chunk `chunk`, optional f32
/// `initial_state`) for the upstream `d_o` `[B, T, H, V]` and optional f32 `d_final_state`
/// `[B, H, K, V]`, written to `grads` (dh0 and dlog_gamma may be NULL), on every device: the
/// caller's memory of the handle's device, on the handle's stream. Asking for dlog_gamma on a
/// GPU makes the call wait for the stream (its partials are summed on the host).
///
/// # Safety
/// `h` from [`crate::retention_create`]; `grads` readable; every non-null tensor as in
/// [`crate::retention_chunkwise_forward`] (memory of the handle's device).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_chunkwise_backward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    initial_state: *const RetentionTensor,
    chunk: u32,
    d_o: *const RetentionTensor,
    d_final_state: *const RetentionTensor,
    grads: *const RetentionGradients,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's preconditions.
        unsafe {
            let c = call((q, k, v), initial_state, (d_o, d_final_state), grads)?;
            backward(
                h,
                &c,
                &Form::Chunkwise(chunk as usize),
                "chunkwise backward",
            )
        }
    })
}

/// Gradients of [`crate::retention_chunkwise_varlen_forward`] (same packed layout and
/// `cu_seqlens`; `chunk` 0 means the recurrent form, whose gradients are the same function's).
/// CPU handles only (`RETENTION_UNSUPPORTED` elsewhere, before any pointer is read).
///
/// # Safety
/// As [`retention_chunkwise_backward`] (host memory); `cu_seqlens` readable for `num_bounds`
/// values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_chunkwise_varlen_backward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    cu_seqlens_ptr: *const i64,
    num_bounds: u32,
    initial_state: *const RetentionTensor,
    chunk: u32,
    d_o: *const RetentionTensor,
    d_final_state: *const RetentionTensor,
    grads: *const RetentionGradients,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's preconditions.
        unsafe {
            let c = call((q, k, v), initial_state, (d_o, d_final_state), grads)?;
            let cu = cu_seqlens(cu_seqlens_ptr, num_bounds, c.qkv[0].shape[1])?;
            // The recurrent form is the same function; its backward runs chunk by chunk.
            let chunk = if chunk == 0 {
                RECURRENT_CHUNK
            } else {
                chunk as usize
            };
            backward(h, &c, &Form::Varlen(cu, chunk), "varlen backward")
        }
    })
}

/// Gradients of [`crate::retention_parallel_forward`] for the upstream `d_o`; `grads.dh0`
/// must be NULL. On every device, as [`retention_chunkwise_backward`].
///
/// # Safety
/// As [`retention_chunkwise_backward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_parallel_backward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    d_o: *const RetentionTensor,
    grads: *const RetentionGradients,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: the caller's preconditions.
        unsafe {
            let c = call((q, k, v), std::ptr::null(), (d_o, std::ptr::null()), grads)?;
            backward(h, &c, &Form::Parallel, "parallel backward")
        }
    })
}
