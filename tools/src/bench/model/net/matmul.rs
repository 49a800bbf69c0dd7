//! The projections' GEMM: `out ← x·W` or `out ← out + x·W` with row-major x `[m, k]`, W
//! `[k, n]`, out `[m, n]`, through the `gemm` crate on every rayon thread (f16 operands are
//! multiplied with f32 accumulation, as on a GPU's tensor cores).
//!
//! This is the one place a model multiplies host matrices. On CUDA the same product over
//! device tensors is `retention_runtime::Blas::linear_into` (cuBLAS `gemm_ex`, f32 compute);
//! the model suite does not run on CUDA yet (see `bench/model/mod.rs`).

use super::NetElement;

use super::error::ModelError;

/// Whether the product overwrites `out` or adds to it (the residual connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// `out ← x·W`.
    Overwrite,
    /// `out ← out + x·W`.
    Accumulate,
}

/// `out (+)= x·W` for row-major x `[m, k]`, W `[k, n]`, out `[m, n]`; T is f32 or f16.
///
/// # Errors
/// [`ModelError::Config`] when a slice is shorter than its shape.
pub fn linear<T: NetElement>(
    x: &[T],
    w: &[T],
    out: &mut [T],
    (m, k, n): (usize, usize, usize),
    write: Write,
) -> Result<(), ModelError> {
    let need = |len: usize, r: usize, c: usize, name: &str| {
        if r.checked_mul(c).is_none_or(|rc| len < rc) {
            Err(ModelError::Config(format!(
                "matmul operand {name}: {len} elements for [{r}, {c}]"
            )))
        } else {
            Ok(())
        }
    };
    need(x.len(), m, k, "x")?;
    need(w.len(), k, n, "W")?;
    need(out.len(), m, n, "out")?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    // SAFETY: x, W and out hold at least m·k, k·n and m·n elements (checked above), each
    // row-major with column stride 1, so every index the product touches is in bounds; out
    // is a unique borrow aliasing neither operand; T is f32 or f16, types gemm serves.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            write == Write::Accumulate,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            1,
            n as isize,
            T::from_f64(1.0),
            T::from_f64(1.0),
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        );
    }
    Ok(())
}
