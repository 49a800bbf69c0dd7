//! The host GEMM behind [`crate::Blas`] on `Device::Cpu` and `Device::Emulated`, whose
//! tensors are host memory (the emulator's memory is the host's): the `gemm` crate on the
//! tensors' own bytes, f16 operands multiplied with f32 accumulation, run at once (both
//! devices execute in stream order as work is enqueued). The emulator has no time model for
//! it: a model step's predicted time on the emulated device covers its kernels only.

use half::f16;
use retention_core::{Result, RetentionError};

use crate::tensor::DeviceDtype;

/// `out (+)= x·W` over host addresses: row-major x `[m, k]`, W `[k, n]`, out `[m, n]`.
///
/// # Errors
/// [`RetentionError::Unsupported`] for bf16 (the `gemm` crate has no bf16).
///
/// # Safety
/// The three addresses are host memory of m·k, k·n and m·n elements of `dtype`, aligned for
/// it and alive for the call; out overlaps neither operand.
pub(crate) unsafe fn gemm_host(
    dtype: DeviceDtype,
    (m, k, n): (usize, usize, usize),
    (x, w, out): (u64, u64, u64),
    accumulate: bool,
) -> Result<()> {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match dtype {
            DeviceDtype::F32 => run::<f32>((m, k, n), (x, w, out), accumulate, 1.0),
            DeviceDtype::F16 => run::<f16>((m, k, n), (x, w, out), accumulate, f16::ONE),
            other => {
                return Err(RetentionError::Unsupported {
                    what: "host GEMM dtype".into(),
                    value: other.to_string(),
                    reason: "the CPU and emulated devices multiply f32 and f16 (cuBLAS: bf16 too)"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

/// # Safety
/// As [`gemm_host`], with `T` the tensors' element type.
unsafe fn run<T: 'static + Copy>(
    (m, k, n): (usize, usize, usize),
    (x, w, out): (u64, u64, u64),
    accumulate: bool,
    one: T,
) {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // SAFETY: the caller guarantees m·k, k·n and m·n live, aligned elements at x, W and out,
    // each row-major with column stride 1, out disjoint from both; T is f32 or f16, types
    // the gemm crate serves.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out as *mut T,
            1,
            n as isize,
            accumulate,
            x as *const T,
            1,
            k as isize,
            w as *const T,
            1,
            n as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
}
