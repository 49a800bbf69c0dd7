//! Single-threaded f32 matrix products on strided views, through the `gemm` crate (which
//! picks its AVX2/AVX-512/NEON micro-kernel at run time). Callers parallelise across heads
//! and blocks, so every product here runs with `Parallelism::None`.

/// A read-only m×n matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// Row-major with leading dimension `ld`.
    pub fn rows(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with leading dimension `ld`.
    pub fn transposed(data: &'a [f32], ld: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: ld,
        }
    }

    /// Whether every element of an r×c view lies inside the data.
    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// `dst ← lhs·rhs` (`accumulate = None`) or `dst ← α·dst + lhs·rhs` (`Some(α)`), where lhs
/// is m×k, rhs is k×n and dst is row-major m×n with leading dimension `ld`.
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: Option<f32>,
    lhs: View<'_>,
    rhs: View<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(n <= ld && (m - 1) * ld + n <= dst.len(), "dst too small");
    assert!(lhs.fits(m, k) && rhs.fits(k, n), "operand too small");
    if k == 0 {
        let alpha = accumulate.unwrap_or(0.0);
        for row in dst.chunks_mut(ld).take(m) {
            for x in &mut row[..n] {
                *x *= alpha;
            }
        }
        return;
    }
    let (read_dst, alpha) = match accumulate {
        Some(a) => (true, a),
        None => (false, 0.0),
    };
    // SAFETY: every element the product touches is inside its slice (asserted above: the
    // largest offsets (m−1)·ld + n−1, (m−1)·rs + (k−1)·cs and (k−1)·rs + (n−1)·cs are in
    // bounds); dst is borrowed mutably so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            read_dst,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            alpha,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_the_definition() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect(); // (m, k)
        let bt: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 1.5).collect(); // (n, k)
        let mut d = vec![1.0f32; m * 8]; // (m, n) with ld 8
        matmul(
            m,
            n,
            k,
            &mut d,
            8,
            Some(2.0),
            View::rows(&a, k),
            View::transposed(&bt, k),
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f32>() + 2.0;
                assert!((d[i * 8 + j] - want).abs() < 1e-4, "({i},{j})");
            }
            assert_eq!(d[i * 8 + 7], 1.0, "column past n untouched");
        }
    }
}
