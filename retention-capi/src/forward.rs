//! The forwards (ARCHITECTURE §1): parallel, recurrent, chunkwise and packed varlen chunkwise,
//! on the caller's memory through the runtime's device API — borrowed tensors of the handle's
//! device, outputs written in place, no copy of q, k, v or o on any device.

use retention::{CuSeqlens, DeviceDtype, DeviceTensor};

use crate::handle::{RetentionHandle, handle};
use crate::status::{Failure, RetentionStatus, guard, non_null};
use crate::tensor::{RetentionTensor, View, optional, view};

/// The three sequence inputs as C passes them.
pub(crate) type CQkv = (
    *const RetentionTensor,
    *const RetentionTensor,
    *const RetentionTensor,
);

/// Which stateful form to run.
enum Form {
    Chunkwise(usize),
    Recurrent,
    Varlen(CuSeqlens, Option<usize>),
}

/// Views of q, k, v (rank 4).
///
/// # Safety
/// Each pointer null or a readable descriptor.
pub(crate) unsafe fn qkv_views((q, k, v): CQkv) -> Result<[View; 3], Failure> {
    // SAFETY: forwarded precondition.
    unsafe { Ok([view(q, "q", 4)?, view(k, "k", 4)?, view(v, "v", 4)?]) }
}

/// `cu_seqlens` (`n` host int64 boundaries) over `total` packed tokens.
///
/// # Safety
/// `cu` null or readable for `n` values.
pub(crate) unsafe fn cu_seqlens(
    cu: *const i64,
    n: u32,
    total: usize,
) -> Result<CuSeqlens, Failure> {
    non_null(cu, "cu_seqlens")?;
    // SAFETY: non-null and readable for `n` values, per the caller.
    let bounds = unsafe { std::slice::from_raw_parts(cu, n as usize) };
    Ok(CuSeqlens::from_i64(bounds, total)?)
}

/// Shared body of the stateful forwards.
///
/// # Safety
/// As [`retention_chunkwise_forward`].
unsafe fn stateful(
    h: *const RetentionHandle,
    qkv: CQkv,
    initial_state: *const RetentionTensor,
    form: impl FnOnce(&[View; 3]) -> Result<Form, Failure>,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> Result<(), Failure> {
    // SAFETY: all pointer preconditions are the caller's.
    unsafe {
        let r = handle(h)?;
        let d = r.device();
        let views = qkv_views(qkv)?;
        let form = form(&views)?;
        let [q, k, v] = views.each_ref().map(|x| x.borrow(d));
        let h0 = optional(initial_state, "initial_state", 4)?.map(|x| x.borrow(d));
        let mut o = view(o, "o", 4)?.borrow(d);
        let rows = match &form {
            Form::Varlen(cu, _) => cu.num_seqs(),
            _ => views[0].shape[0],
        };
        let (heads, dk, dv) = (views[0].shape[2], views[0].shape[3], views[2].shape[3]);
        let given = optional(final_state, "final_state", 4)?;
        let mut ht = match &given {
            Some(x) => x.borrow(d),
            None => {
                DeviceTensor::zeros(r.ret.memory(), d, DeviceDtype::F32, &[rows, heads, dk, dv])?
            }
        };
        // Scratch memory this call frees: the state when none is given, varlen's boundaries.
        let scratch = given.is_none() || matches!(form, Form::Varlen(..));
        let (out, s, qkv) = ((&mut o, &mut ht), r.stream(), (&q, &k, &v));
        match form {
            Form::Chunkwise(c) => r.ret.chunkwise_into(qkv, h0.as_ref(), out, c, s),
            Form::Recurrent => r.ret.recurrent_into(qkv, h0.as_ref(), out, s),
            Form::Varlen(cu, Some(c)) => {
                r.ret
                    .chunkwise_varlen_into(qkv, &cu, h0.as_ref(), out, c, s)
            }
            Form::Varlen(cu, None) => r.ret.recurrent_varlen_into(qkv, &cu, h0.as_ref(), out, s),
        }?;
        if scratch {
            r.wait_for_caller_stream()?;
        }
    }
    Ok(())
}

fn chunk_of(chunk: u32) -> Result<usize, Failure> {
    if chunk == 0 {
        return Err(Failure::new(RetentionStatus::InvalidArgument, "chunk is 0"));
    }
    Ok(chunk as usize)
}

/// Chunkwise forward: o `[B, T, H, V]` and, if `final_state` is non-null, H_T `[B, H, K, V]`
/// f32 from q, k `[B, T, H, K]`, v `[B, T, H, V]` (f32, f16 or bf16, one dtype) and an optional
/// f32 `initial_state` `[B, H, K, V]`.
///
/// # Safety
/// `h` from [`crate::retention_create`]; every non-null tensor pointer points to a readable
/// descriptor whose data is memory of the handle's device holding its shape's elements
/// (outputs writable, not aliasing inputs). `initial_state` and `final_state` may be null.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_chunkwise_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    initial_state: *const RetentionTensor,
    chunk: u32,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        let form = |_: &[View; 3]| Ok(Form::Chunkwise(chunk_of(chunk)?));
        // SAFETY: preconditions forwarded from this function's contract.
        unsafe { stateful(h, (q, k, v), initial_state, form, o, final_state) }
    })
}

/// Recurrent forward (token by token); arguments as [`retention_chunkwise_forward`].
///
/// # Safety
/// As [`retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_recurrent_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    initial_state: *const RetentionTensor,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        let form = |_: &[View; 3]| Ok(Form::Recurrent);
        // SAFETY: preconditions forwarded from this function's contract.
        unsafe { stateful(h, (q, k, v), initial_state, form, o, final_state) }
    })
}

/// Chunkwise forward over a packed variable-length batch: q, k `[1, ΣT, H, K]`, v, o
/// `[1, ΣT, H, V]`, `initial_state` / `final_state` `[N, H, K, V]` f32, `cu_seqlens` N + 1
/// increasing host int64 boundaries from 0 to ΣT (`num_bounds` = N + 1); chunks restart at
/// every sequence. `chunk` 0 runs the recurrent form.
///
/// # Safety
/// As [`retention_chunkwise_forward`]; `cu_seqlens` readable host memory for `num_bounds`
/// values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_chunkwise_varlen_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    cu_seqlens_ptr: *const i64,
    num_bounds: u32,
    initial_state: *const RetentionTensor,
    chunk: u32,
    o: *const RetentionTensor,
    final_state: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        let form = |views: &[View; 3]| {
            // SAFETY: the caller's precondition on `cu_seqlens_ptr`.
            let cu = unsafe { cu_seqlens(cu_seqlens_ptr, num_bounds, views[0].shape[1])? };
            Ok(Form::Varlen(cu, (chunk > 0).then_some(chunk as usize)))
        };
        // SAFETY: preconditions forwarded from this function's contract.
        unsafe { stateful(h, (q, k, v), initial_state, form, o, final_state) }
    })
}

/// Parallel forward: o `[B, T, H, V]` from q, k `[B, T, H, K]`, v `[B, T, H, V]`.
///
/// # Safety
/// As [`retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_parallel_forward(
    h: *const RetentionHandle,
    q: *const RetentionTensor,
    k: *const RetentionTensor,
    v: *const RetentionTensor,
    o: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: all pointer preconditions are the caller's.
        unsafe {
            let r = handle(h)?;
            let d = r.device();
            let [q, k, v] = qkv_views((q, k, v))?.each_ref().map(|x| x.borrow(d));
            let mut o = view(o, "o", 4)?.borrow(d);
            r.ret.parallel_into((&q, &k, &v), &mut o, r.stream())?;
        }
        Ok(())
    })
}
