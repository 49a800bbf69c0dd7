//! The AVX2 + FMA (and F16C) bodies of the vector loops. Callers check the features at run
//! time before calling any of these.

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
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), acc0);
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
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(j)), _mm256_loadu_ps(pb.add(j)), acc0);
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
