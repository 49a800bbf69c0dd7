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
mod avx2;

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
