//! The gated MSR epilogue y = RMSNorm_head(o) ⊙ swish(g) (ARCHITECTURE §1) and its backward,
//! all `[B, T, H, V]` in one input dtype. Both run the runtime's device forms on the caller's
//! memory of the handle's device, on the handle's stream (the epilogue family's kernels on a
//! GPU-like device, no copy; the CPU kernels on the CPU).

use crate::handle::{RetentionHandle, handle};
use crate::status::{RetentionStatus, guard};
use crate::tensor::{RetentionTensor, view};

/// The gated (MSR) epilogue: out = RMSNorm_head(o) ⊙ swish(g), all `[B, T, H, V]`.
///
/// # Safety
/// `h` from [`crate::retention_create`]; tensors as in [`crate::retention_chunkwise_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_gated_epilogue_forward(
    h: *const RetentionHandle,
    o: *const RetentionTensor,
    g: *const RetentionTensor,
    eps: f64,
    out: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: all pointer preconditions are the caller's.
        unsafe {
            let r = handle(h)?;
            let d = r.device();
            let (o, g) = (view(o, "o", 4)?.borrow(d), view(g, "g", 4)?.borrow(d));
            let mut y = view(out, "out", 4)?.borrow(d);
            r.ret.msr_epilogue_into(&o, &g, eps, &mut y, r.stream())?;
        }
        Ok(())
    })
}

/// Gradients of [`retention_gated_epilogue_forward`] for the upstream `dy`: `d_o` and `dg`,
/// `[B, T, H, V]` in the input dtype, on every device (as the forward).
///
/// # Safety
/// As [`retention_gated_epilogue_forward`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn retention_gated_epilogue_backward(
    h: *const RetentionHandle,
    o: *const RetentionTensor,
    g: *const RetentionTensor,
    eps: f64,
    dy: *const RetentionTensor,
    d_o: *const RetentionTensor,
    dg: *const RetentionTensor,
) -> RetentionStatus {
    guard(|| {
        // SAFETY: all pointer preconditions are the caller's; the runtime checks every
        // tensor's device, dtype and shape before touching its memory.
        unsafe {
            let r = handle(h)?;
            let d = r.device();
            let [o, g, dy] = [view(o, "o", 4)?, view(g, "g", 4)?, view(dy, "dy", 4)?]
                .each_ref()
                .map(|x| x.borrow(d));
            let mut grad_o = view(d_o, "d_o", 4)?.borrow(d);
            let mut grad_g = view(dg, "dg", 4)?.borrow(d);
            let out = (&mut grad_o, &mut grad_g);
            r.ret
                .msr_epilogue_backward_into(&o, &g, eps, &dy, out, r.stream())?;
        }
        Ok(())
    })
}
