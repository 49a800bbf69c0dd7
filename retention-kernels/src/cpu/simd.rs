//! The vector inner loops: AVX2 + FMA on x86_64 when the running CPU has them (detected at
//! run time), a portable fallback everywhere else. Both compute the same sums; the vector path
//! only reassociates them into 8 lanes.

/// Whether the AVX2 + FMA paths may run on this CPU.
#[inline]
fn use_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The fused decode update of one head: for every row i of the K×V `state`,
/// `state[i] ← g·state[i] + k[i]·v`, and `o ← Σ_i q[i]·state[i]` (the *new* state).
/// One read and one write of the state; `o` (length V) is overwritten.
pub fn decode_update(state: &mut [f32], q: &[f32], k: &[f32], v: &[f32], g: f32, o: &mut [f32]) {
    let (dk, dv) = (q.len(), v.len());
    assert!(state.len() == dk * dv && k.len() == dk && o.len() == dv);
    #[cfg(target_arch = "x86_64")]
    if use_avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths checked above.
        unsafe { avx2::decode_update(state, q, k, v, g, o) };
        return;
    }
    o.fill(0.0);
    for (i, row) in state.chunks_exact_mut(dv).enumerate() {
        let (a, b) = (k[i], q[i]);
        for ((s, &vj), oj) in row.iter_mut().zip(v).zip(o.iter_mut()) {
            let n = g * *s + a * vj;
            *s = n;
            *oj += b * n;
        }
    }
}

/// Dot product of two equally long rows.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2_fma() {
        // SAFETY: AVX2 and FMA present (checked above); equal lengths asserted above.
        return unsafe { avx2::dot(a, b) };
    }
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y ← y + a·x` over equally long rows.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2_fma() {
        // SAFETY: AVX2 and FMA present (checked above); equal lengths asserted above.
        unsafe { avx2::axpy(y, a, x) };
        return;
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `y ← a·y`.
pub fn scale(y: &mut [f32], a: f32) {
    for yi in y {
        *yi *= a;
    }
}

/// Dot product of an f32 row with a bf16 row, widening on the fly (no staging buffer).
pub fn dot_bf16(a: &[f32], b: &[half::bf16]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2_fma() {
        // SAFETY: AVX2 and FMA present (checked above); equal lengths asserted above.
        return unsafe { avx2::dot_bf16(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// `y ← y + w·x` with a bf16 row x widened on the fly.
pub fn axpy_bf16(y: &mut [f32], w: f32, x: &[half::bf16]) {
    assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2_fma() {
        // SAFETY: AVX2 and FMA present (checked above); equal lengths asserted above.
        unsafe { avx2::axpy_bf16(y, w, x) };
        return;
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += w * xi.to_f32();
    }
}

/// Whether the F16C conversions may run too.
#[inline]
fn use_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use_avx2_fma() && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Dot product of an f32 row with an f16 row, widening on the fly.
pub fn dot_f16(a: &[f32], b: &[half::f16]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if use_f16c() {
        // SAFETY: AVX2, FMA and F16C present (checked above); equal lengths asserted above.
        return unsafe { avx2::dot_f16(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// `y ← y + w·x` with an f16 row x widened on the fly.
pub fn axpy_f16(y: &mut [f32], w: f32, x: &[half::f16]) {
    assert_eq!(y.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if use_f16c() {
        // SAFETY: AVX2, FMA and F16C present (checked above); equal lengths asserted above.
        unsafe { avx2::axpy_f16(y, w, x) };
        return;
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += w * xi.to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::{bf16, f16};
    use std::arch::x86_64::{
        __m128i, __m256, _MM_HINT_T0, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_loadu_si128,
        _mm_movehl_ps, _mm_prefetch, _mm_shuffle_ps, _mm256_castps256_ps128, _mm256_castsi256_ps,
        _mm256_cvtepu16_epi32, _mm256_cvtph_ps, _mm256_extractf128_ps, _mm256_fmadd_ps,
        _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_slli_epi32,
        _mm256_storeu_ps,
    };

    /// Horizontal sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// AVX2 and FMA must be available; `state.len() == q.len() * v.len()`, `k.len() == q.len()`,
    /// `o.len() == v.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn decode_update(
        state: &mut [f32],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        g: f32,
        o: &mut [f32],
    ) {
        let (dk, dv) = (q.len(), v.len());
        let vec_end = dv - dv % 8;
        o.fill(0.0);
        let gv = _mm256_set1_ps(g);
        let sp = state.as_mut_ptr();
        let (vp, op) = (v.as_ptr(), o.as_mut_ptr());
        // Four rows per pass so each 8-lane slice of o is loaded and stored once per 4 rows.
        let mut i = 0;
        while i + 4 <= dk {
            let (a0, a1, a2, a3) = (k[i], k[i + 1], k[i + 2], k[i + 3]);
            let (b0, b1, b2, b3) = (q[i], q[i + 1], q[i + 2], q[i + 3]);
            let (av0, av1, av2, av3) = (
                _mm256_set1_ps(a0),
                _mm256_set1_ps(a1),
                _mm256_set1_ps(a2),
                _mm256_set1_ps(a3),
            );
            let (bv0, bv1, bv2, bv3) = (
                _mm256_set1_ps(b0),
                _mm256_set1_ps(b1),
                _mm256_set1_ps(b2),
                _mm256_set1_ps(b3),
            );
            let mut j = 0;
            while j < vec_end {
                // SAFETY: rows i..i+4 lie inside state (i + 4 <= dk), j + 8 <= dv, and o, v
                // have dv elements; the prefetched rows i+4..i+8 exist when i + 8 <= dk.
                unsafe {
                    let vv = _mm256_loadu_ps(vp.add(j));
                    let mut ov = _mm256_loadu_ps(op.add(j));
                    let p0 = sp.add(i * dv + j);
                    let p1 = p0.add(dv);
                    let p2 = p1.add(dv);
                    let p3 = p2.add(dv);
                    // Rows are only 4·V bytes long: too short for the hardware prefetcher to
                    // lock on, so fetch the next block's rows one block ahead.
                    if i + 8 <= dk && j % 16 == 0 {
                        let ahead = p0.add(4 * dv).cast::<i8>();
                        _mm_prefetch::<_MM_HINT_T0>(ahead);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(4 * dv));
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(8 * dv));
                        _mm_prefetch::<_MM_HINT_T0>(ahead.add(12 * dv));
                    }
                    let s0 = _mm256_fmadd_ps(gv, _mm256_loadu_ps(p0), _mm256_mul_ps(av0, vv));
                    let s1 = _mm256_fmadd_ps(gv, _mm256_loadu_ps(p1), _mm256_mul_ps(av1, vv));
                    let s2 = _mm256_fmadd_ps(gv, _mm256_loadu_ps(p2), _mm256_mul_ps(av2, vv));
                    let s3 = _mm256_fmadd_ps(gv, _mm256_loadu_ps(p3), _mm256_mul_ps(av3, vv));
                    _mm256_storeu_ps(p0, s0);
                    _mm256_storeu_ps(p1, s1);
                    _mm256_storeu_ps(p2, s2);
                    _mm256_storeu_ps(p3, s3);
                    ov = _mm256_fmadd_ps(bv0, s0, ov);
                    ov = _mm256_fmadd_ps(bv1, s1, ov);
                    ov = _mm256_fmadd_ps(bv2, s2, ov);
                    ov = _mm256_fmadd_ps(bv3, s3, ov);
                    _mm256_storeu_ps(op.add(j), ov);
                }
                j += 8;
            }
            for r in i..i + 4 {
                let (a, b) = (k[r], q[r]);
                for jj in vec_end..dv {
                    let s = &mut state[r * dv + jj];
                    *s = g * *s + a * v[jj];
                    o[jj] += b * *s;
                }
            }
            i += 4;
        }
        for r in i..dk {
            let row = &mut state[r * dv..(r + 1) * dv];
            let (a, b) = (k[r], q[r]);
            for ((s, &vj), oj) in row.iter_mut().zip(v).zip(o.iter_mut()) {
                *s = g * *s + a * vj;
                *oj += b * *s;
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut j = 0;
        while j + 16 <= n {
            // SAFETY: j + 16 <= n = a.len() = b.len().
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(j + 8)),
                    _mm256_loadu_ps(pb.add(j + 8)),
                    acc1,
                );
            }
            j += 16;
        }
        if j + 8 <= n {
            // SAFETY: j + 8 <= n.
            unsafe {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), acc0);
            }
            j += 8;
        }
        let tail: f32 = a[j..].iter().zip(&b[j..]).map(|(x, y)| x * y).sum();
        hsum(std::arch::x86_64::_mm256_add_ps(acc0, acc1)) + tail
    }

    /// # Safety
    /// AVX2 and FMA must be available; `y.len() == x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let av = _mm256_set1_ps(a);
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: j + 8 <= n = y.len() = x.len().
            unsafe {
                let r = _mm256_fmadd_ps(av, _mm256_loadu_ps(px.add(j)), _mm256_loadu_ps(py.add(j)));
                _mm256_storeu_ps(py.add(j), r);
            }
            j += 8;
        }
        for (yi, &xi) in y[j..].iter_mut().zip(&x[j..]) {
            *yi += a * xi;
        }
    }

    /// Eight bf16 at `p` widened to f32 (bf16 is the top half of an f32).
    ///
    /// # Safety
    /// AVX2 available; 8 readable u16 at `p`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_bf16x8(p: *const bf16) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        #[allow(clippy::cast_ptr_alignment)] // loadu: no alignment requirement
        let raw = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
    }

    /// Eight f16 at `p` widened to f32.
    ///
    /// # Safety
    /// AVX2 and F16C available; 8 readable u16 at `p`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16x8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        #[allow(clippy::cast_ptr_alignment)] // loadu: no alignment requirement
        let raw = unsafe { _mm_loadu_si128(p.cast::<__m128i>()) };
        _mm256_cvtph_ps(raw)
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_bf16(a: &[f32], b: &[bf16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut j = 0;
        while j + 16 <= n {
            // SAFETY: j + 16 <= n = a.len() = b.len().
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), load_bf16x8(pb.add(j)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(j + 8)),
                    load_bf16x8(pb.add(j + 8)),
                    acc1,
                );
            }
            j += 16;
        }
        let tail: f32 = a[j..]
            .iter()
            .zip(&b[j..])
            .map(|(x, y)| x * y.to_f32())
            .sum();
        hsum(std::arch::x86_64::_mm256_add_ps(acc0, acc1)) + tail
    }

    /// # Safety
    /// AVX2 and FMA must be available; `y.len() == x.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy_bf16(y: &mut [f32], w: f32, x: &[bf16]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let wv = _mm256_set1_ps(w);
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: j + 8 <= n = y.len() = x.len().
            unsafe {
                let r = _mm256_fmadd_ps(wv, load_bf16x8(px.add(j)), _mm256_loadu_ps(py.add(j)));
                _mm256_storeu_ps(py.add(j), r);
            }
            j += 8;
        }
        for (yi, xi) in y[j..].iter_mut().zip(&x[j..]) {
            *yi += w * xi.to_f32();
        }
    }

    /// # Safety
    /// AVX2, FMA and F16C must be available; `a.len() == b.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut j = 0;
        while j + 16 <= n {
            // SAFETY: j + 16 <= n = a.len() = b.len().
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), load_f16x8(pb.add(j)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(j + 8)),
                    load_f16x8(pb.add(j + 8)),
                    acc1,
                );
            }
            j += 16;
        }
        let tail: f32 = a[j..]
            .iter()
            .zip(&b[j..])
            .map(|(x, y)| x * y.to_f32())
            .sum();
        hsum(std::arch::x86_64::_mm256_add_ps(acc0, acc1)) + tail
    }

    /// # Safety
    /// AVX2, FMA and F16C must be available; `y.len() == x.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy_f16(y: &mut [f32], w: f32, x: &[f16]) {
        let n = y.len();
        let (py, px) = (y.as_mut_ptr(), x.as_ptr());
        let wv = _mm256_set1_ps(w);
        let mut j = 0;
        while j + 8 <= n {
            // SAFETY: j + 8 <= n = y.len() = x.len().
            unsafe {
                let r = _mm256_fmadd_ps(wv, load_f16x8(px.add(j)), _mm256_loadu_ps(py.add(j)));
                _mm256_storeu_ps(py.add(j), r);
            }
            j += 8;
        }
        for (yi, xi) in y[j..].iter_mut().zip(&x[j..]) {
            *yi += w * xi.to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_paths_match_scalar_sums() {
        for n in [1usize, 7, 8, 9, 16, 33] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            assert!((f64::from(dot(&a, &b)) - want).abs() < 1e-5, "dot n={n}");
            let mut y = b.clone();
            axpy(&mut y, 0.5, &a);
            for i in 0..n {
                assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6);
            }
        }
        for n in [1usize, 7, 8, 17, 40] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let hb: Vec<half::bf16> = (0..n)
                .map(|i| half::bf16::from_f32((i as f32 * 0.2).cos()))
                .collect();
            let hf: Vec<half::f16> = (0..n)
                .map(|i| half::f16::from_f32((i as f32 * 0.3).cos()))
                .collect();
            let want_b: f64 = a
                .iter()
                .zip(&hb)
                .map(|(x, y)| f64::from(*x) * y.to_f64())
                .sum();
            let want_f: f64 = a
                .iter()
                .zip(&hf)
                .map(|(x, y)| f64::from(*x) * y.to_f64())
                .sum();
            assert!(
                (f64::from(dot_bf16(&a, &hb)) - want_b).abs() < 1e-5,
                "dot_bf16 n={n}"
            );
            assert!(
                (f64::from(dot_f16(&a, &hf)) - want_f).abs() < 1e-5,
                "dot_f16 n={n}"
            );
            let (mut yb, mut yf) = (a.clone(), a.clone());
            axpy_bf16(&mut yb, 0.25, &hb);
            axpy_f16(&mut yf, 0.25, &hf);
            for i in 0..n {
                assert!((yb[i] - (a[i] + 0.25 * hb[i].to_f32())).abs() < 1e-6);
                assert!((yf[i] - (a[i] + 0.25 * hf[i].to_f32())).abs() < 1e-6);
            }
        }
        // Row counts not a multiple of 4 and widths not a multiple of 8 use the tails.
        for (dk, dv) in [(5usize, 11usize), (4, 8), (3, 16), (9, 3)] {
            let st: Vec<f32> = (0..dk * dv).map(|i| (i as f32 * 0.3).sin()).collect();
            let q: Vec<f32> = (0..dk).map(|i| (i as f32 * 0.7).cos()).collect();
            let k: Vec<f32> = (0..dk).map(|i| (i as f32 * 0.5).sin()).collect();
            let v: Vec<f32> = (0..dv).map(|i| (i as f32 * 0.9).cos()).collect();
            let mut s1 = st.clone();
            let mut o = vec![1.0; dv];
            decode_update(&mut s1, &q, &k, &v, 0.9, &mut o);
            for j in 0..dv {
                let mut want = 0.0f64;
                for i in 0..dk {
                    let s = 0.9 * f64::from(st[i * dv + j]) + f64::from(k[i]) * f64::from(v[j]);
                    assert!((f64::from(s1[i * dv + j]) - s).abs() < 1e-6);
                    want += f64::from(q[i]) * s;
                }
                assert!((f64::from(o[j]) - want).abs() < 1e-5, "({dk},{dv}) j={j}");
            }
        }
    }
}
