//! cuBLAS on one of our CUDA streams: a row-major GEMM by device address (`cudarc::cublas`,
//! `libcublas` opened at run time like the driver). [`crate::Blas`] is the public face; this
//! file only turns a checked row-major product into the column-major call cuBLAS expects.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use cudarc::cublas::{CudaBlas, result, sys};
use retention_core::{Result, RetentionError};

use super::stream::Stream;

/// True when `libcublas` can be opened (probed once per process).
pub fn cublas_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: this only tries `dlopen` on cuBLAS's library names and closes what it
        // opened; no pointer crosses the call.
        unsafe { sys::is_culib_present() }
    })
}

/// Element types of a GEMM's operands (all three the same), accumulated in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlasDtype {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// A cuBLAS handle bound to one stream: its work is ordered with the stream's.
#[derive(Debug)]
pub struct BlasHandle {
    blas: CudaBlas,
    ordinal: usize,
}

impl BlasHandle {
    /// A handle on `stream`.
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] when `libcublas` is missing or lacks a function this
    /// build calls; [`RetentionError::DeviceFailure`] when cuBLAS cannot create a handle.
    pub fn new(stream: &Stream) -> Result<Self> {
        let ordinal = stream.ordinal();
        if !cublas_present() {
            return Err(RetentionError::KernelLoad(format!(
                "CUDA device {ordinal}: cuBLAS (libcublas) not found on this machine"
            )));
        }
        let inner = stream.inner.clone();
        let made = catch_unwind(AssertUnwindSafe(move || CudaBlas::new(inner))).map_err(|_| {
            RetentionError::KernelLoad(format!(
                "CUDA device {ordinal}: libcublas lacks a function this build calls"
            ))
        })?;
        let blas = made.map_err(|e| {
            RetentionError::DeviceFailure(format!(
                "CUDA device {ordinal}: creating a cuBLAS handle failed: {e:?}"
            ))
        })?;
        Ok(Self { blas, ordinal })
    }

    /// `out ← x·W` (`accumulate` false) or `out ← out + x·W`, row-major x `[m, k]`, W `[k, n]`,
    /// out `[m, n]`, enqueued on the handle's stream; f32 accumulation.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] for a dimension above `i32::MAX`;
    /// [`RetentionError::DeviceFailure`] when cuBLAS refuses the call.
    ///
    /// # Safety
    /// `x`, `w` and `out` must be device addresses on this handle's device of at least m·k,
    /// k·n and m·n elements of `dtype`, live until the stream has run the product, and `out`
    /// must not overlap `x` or `w`.
    pub unsafe fn gemm_row_major(
        &self,
        dtype: BlasDtype,
        (m, k, n): (usize, usize, usize),
        (x, w, out): (u64, u64, u64),
        accumulate: bool,
    ) -> Result<()> {
        let dim = |v: usize, name: &str| {
            i32::try_from(v).map_err(|_| RetentionError::Unsupported {
                what: format!("cuBLAS GEMM dimension {name}"),
                value: v.to_string(),
                reason: "at most i32::MAX".into(),
            })
        };
        let (mi, ki, ni) = (dim(m, "m")?, dim(k, "k")?, dim(n, "n")?);
        let ty = match dtype {
            BlasDtype::F32 => sys::cudaDataType_t::CUDA_R_32F,
            BlasDtype::F16 => sys::cudaDataType_t::CUDA_R_16F,
            BlasDtype::Bf16 => sys::cudaDataType_t::CUDA_R_16BF,
        };
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        // Row-major out = x·W is column-major outᵀ (n×m, ld n) = Wᵀ (n×k, ld n) · xᵀ (k×m,
        // ld k): cuBLAS's A is W and its B is x, neither transposed.
        // SAFETY: the caller guarantees the three addresses hold the elements the shapes
        // need on this handle's device; alpha and beta are f32 as CUBLAS_COMPUTE_32F reads
        // them, and outlive the call (cuBLAS reads host scalars before returning).
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_N,
                sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&raw const alpha).cast(),
                w as *const std::ffi::c_void,
                ty,
                ni,
                x as *const std::ffi::c_void,
                ty,
                ki,
                (&raw const beta).cast(),
                out as *mut std::ffi::c_void,
                ty,
                ni,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| {
            RetentionError::DeviceFailure(format!(
                "CUDA device {}: cuBLAS GEMM {m}x{k}x{n} failed: {e:?}",
                self.ordinal
            ))
        })
    }
}
