//! The gated MSR epilogue y = RMSNorm_head(o) ⊙ swish(g) (ARCHITECTURE §1) and its backward,
//! all `[B, T, H, V]` in one input dtype. The forward runs the runtime's device form on the
//! caller's memory (the runtime answers `Unsupported` on devices without an epilogue kernel,
//! before touching memory); the backward copies host tensors, so it refuses other devices
//! before any pointer is read.

use half::{bf16, f16};
use retention::{CpuElement, DeviceDtype};

use crate::handle::{RetentionHandle, handle};
use crate::status::{Failure, RetentionStatus, guard};
use crate::tensor::{RetentionTensor, View, view};

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

/// Read o, g, dy at `T`, run the backward, write do and dg.
///
/// # Safety
/// Host views: inputs readable, outputs writable and not aliasing them.
unsafe fn run<T: CpuElement>(
    r: &RetentionHandle,
    [o, g, dy]: &[View; 3],
    eps: f64,
    [d_o, dg]: &[View; 2],
) -> Result<(), Failure> {
    // SAFETY: the caller's precondition; reads and writes check dtype and shape first.
    unsafe {
        let grads =
            r.ret
                .msr_epilogue_backward(&o.read::<T>()?, &g.read::<T>()?, eps, &dy.read::<T>()?)?;
        d_o.write(&grads.d_o)?;
        dg.write(&grads.dg)
    }
}

/// Gradients of [`retention_gated_epilogue_forward`] for the upstream `dy`: `d_o` and `dg`,
/// `[B, T, H, V]` in the input dtype. CPU handles only.
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
        // SAFETY: all pointer preconditions are the caller's; a CPU handle means host memory.
        unsafe {
            let r = handle(h)?;
            r.cpu_only("the gated epilogue backward")?;
            let ins = [view(o, "o", 4)?, view(g, "g", 4)?, view(dy, "dy", 4)?];
            let outs = [view(d_o, "d_o", 4)?, view(dg, "dg", 4)?];
            match ins[0].dtype {
                DeviceDtype::F16 => run::<f16>(r, &ins, eps, &outs),
                DeviceDtype::Bf16 => run::<bf16>(r, &ins, eps, &outs),
                DeviceDtype::F32 => run::<f32>(r, &ins, eps, &outs),
                DeviceDtype::U32 => Err(Failure::new(RetentionStatus::BadDtype, "o: dtype u32")),
            }
        }
    })
}
