//! The chunkwise recurrence of one head over one token range — the shared core of the
//! chunkwise, varlen and parallel-prefix CPU forms. Per chunk of length L (ARCHITECTURE §1):
//!
//! O = s·((Q Kᵀ ⊙ D) V + (Q R) ⊙ ξ);  R ← γ^L R + Kᵀ (V ⊙ ζ).
//!
//! The four products run through [`matmul`]; the scale is folded into Q once, ξ into Q's rows
//! and ζ into V's rows, so every product writes straight into its destination.

use std::ops::Range;

use super::element::CpuElement;
use super::matmul::{View, matmul};
use super::shared_out::SharedOut;
use super::validate::decay_table;

/// Borrowed token-major inputs q, k `[B, T, H, K]`, v `[B, T, H, V]` with their dimensions.
pub(crate) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub seq_len: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub scale: f32,
}

impl<T: CpuElement> Inputs<'_, T> {
    /// Index of token `t` of row `b`, head `h` in units of one head's row.
    fn row(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.seq_len + t) * self.heads + h
    }

    /// Widen q (times the scale), k and v of tokens `range` into row-major f32 tiles.
    pub fn load(&self, b: usize, range: Range<usize>, h: usize, tiles: &mut Tiles) {
        let (dk, dv) = (self.dk, self.dv);
        let end = range.end;
        for (j, t) in range.enumerate() {
            if t + PREFETCH_AHEAD < end {
                let ahead = self.row(b, t + PREFETCH_AHEAD, h);
                prefetch(&self.q[ahead * dk..(ahead + 1) * dk]);
                prefetch(&self.k[ahead * dk..(ahead + 1) * dk]);
                prefetch(&self.v[ahead * dv..(ahead + 1) * dv]);
            }
            let r = self.row(b, t, h);
            let qj = &mut tiles.q[j * dk..(j + 1) * dk];
            T::load_f32(&self.q[r * dk..(r + 1) * dk], qj);
            for x in qj.iter_mut() {
                *x *= self.scale;
            }
            T::load_f32(
                &self.k[r * dk..(r + 1) * dk],
                &mut tiles.k[j * dk..(j + 1) * dk],
            );
            T::load_f32(
                &self.v[r * dv..(r + 1) * dv],
                &mut tiles.v[j * dv..(j + 1) * dv],
            );
        }
    }

    /// Widen only k and v of tokens `range` (key blocks of the parallel form).
    pub fn load_kv(&self, b: usize, range: Range<usize>, h: usize, tiles: &mut Tiles) {
        let (dk, dv) = (self.dk, self.dv);
        let end = range.end;
        for (j, t) in range.enumerate() {
            if t + PREFETCH_AHEAD < end {
                let ahead = self.row(b, t + PREFETCH_AHEAD, h);
                prefetch(&self.k[ahead * dk..(ahead + 1) * dk]);
                prefetch(&self.v[ahead * dv..(ahead + 1) * dv]);
            }
            let r = self.row(b, t, h);
            T::load_f32(
                &self.k[r * dk..(r + 1) * dk],
                &mut tiles.k[j * dk..(j + 1) * dk],
            );
            T::load_f32(
                &self.v[r * dv..(r + 1) * dv],
                &mut tiles.v[j * dv..(j + 1) * dv],
            );
        }
    }

    /// Narrow the f32 output rows of tokens `range` into `out` (`[B, T, H, V]`).
    ///
    /// # Safety
    /// No other task may be writing rows (b, t, h) for t in `range` at the same time.
    pub unsafe fn store(
        &self,
        b: usize,
        range: Range<usize>,
        h: usize,
        o: &[f32],
        out: &SharedOut<'_, T>,
    ) {
        let dv = self.dv;
        for (j, t) in range.enumerate() {
            // SAFETY: the caller owns rows (b, t, h) for t in `range` exclusively.
            let dst = unsafe { out.rows(self.row(b, t, h) * dv, dv) };
            T::store_f32(&o[j * dv..(j + 1) * dv], dst);
        }
    }
}

/// Tokens ahead whose rows a load requests early. One head's rows sit H·K elements apart —
/// a stride the hardware prefetchers do not follow — so without this every row is a miss.
pub(crate) const PREFETCH_AHEAD: usize = 4;

/// Prefetch every cache line of `row` (a hint; nothing off x86_64).
#[inline]
pub(crate) fn prefetch<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let base = row.as_ptr().cast::<i8>();
        for off in (0..std::mem::size_of_val(row)).step_by(64) {
            // SAFETY: `off` is inside the row, so the address is in bounds; a prefetch never
            // faults and has no architectural effect.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Per-task f32 working tiles for chunks of up to `c` tokens.
pub(crate) struct Tiles {
    pub q: Vec<f32>,   // (C, K)
    pub k: Vec<f32>,   // (C, K)
    pub v: Vec<f32>,   // (C, V)
    pub a: Vec<f32>,   // (C, C)
    pub o: Vec<f32>,   // (C, V)
    pub pow: Vec<f32>, // (C + 1): γ^n
    pub rev: Vec<f32>, // (C): γ^(L−1−n)
}

impl Tiles {
    /// Tiles for chunks of up to `c` tokens with head dims `dk`, `dv`.
    pub fn new(c: usize, dk: usize, dv: usize) -> Self {
        Self {
            q: vec![0.0; c * dk],
            k: vec![0.0; c * dk],
            v: vec![0.0; c * dv],
            a: vec![0.0; c * c],
            o: vec![0.0; c * dv],
            pow: Vec::with_capacity(c + 1),
            rev: Vec::with_capacity(c),
        }
    }
}

/// What to do with the outputs of a range.
pub(crate) enum Emit<'o, 'a, T> {
    /// Write o rows into the shared output.
    Outputs(&'o SharedOut<'a, T>),
    /// Only advance the state (the first pass of the sequence-parallel split).
    StateOnly,
}

/// Run chunks of `c` tokens over tokens `range` of row `b` for every head in `heads`,
/// carrying their states (`heads.len()` consecutive K×V row-major f32 blocks) in place.
/// Chunks are the outer loop and heads the inner one: one token's rows of all heads share a
/// page, so a group of heads walks the (strided, token-major) inputs page by page together
/// instead of each head taking its own TLB misses. `state_is_zero` lets the first chunk skip
/// Q·R.
///
/// # Safety
/// With [`Emit::Outputs`], no other task may write rows (b, t, h), t ∈ `range`, h ∈ `heads`,
/// concurrently.
pub(crate) unsafe fn chunkwise_heads<T: CpuElement>(
    x: &Inputs<'_, T>,
    b: usize,
    range: Range<usize>,
    heads: Range<usize>,
    c: usize,
    log2g: &[f32],
    states: &mut [f32],
    mut state_is_zero: bool,
    emit: &Emit<'_, '_, T>,
    tiles: &mut Tiles,
) {
    let (dk, dv) = (x.dk, x.dv);
    let mut start = range.start;
    while start < range.end {
        let len = c.min(range.end - start);
        let chunk = start..start + len;
        for (h, state) in heads.clone().zip(states.chunks_exact_mut(dk * dv)) {
            decay_table(log2g[h], len, &mut tiles.pow);
            x.load(b, chunk.clone(), h, tiles);
            // SAFETY: forwarded from this function's contract.
            unsafe {
                chunk_step(
                    x,
                    b,
                    chunk.clone(),
                    h,
                    state,
                    state_is_zero,
                    emit,
                    true,
                    tiles,
                );
            }
        }
        state_is_zero = false;
        start += len;
    }
}

/// The outputs of tokens `chunk` (row `b`, head `h`) from the state entering the chunk
/// (`state_is_zero`: a zero one), which is left as it is — the chunk-parallel forward's last
/// pass ([`super::forward_pair`]).
///
/// # Safety
/// No other task may write rows (b, t, h), t ∈ `chunk`, of `out` concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn chunk_outputs<T: CpuElement>(
    x: &Inputs<'_, T>,
    b: usize,
    chunk: Range<usize>,
    h: usize,
    log2g: f32,
    state: &mut [f32],
    state_is_zero: bool,
    out: &SharedOut<'_, T>,
    tiles: &mut Tiles,
) {
    decay_table(log2g, chunk.len(), &mut tiles.pow);
    x.load(b, chunk.clone(), h, tiles);
    let emit = Emit::Outputs(out);
    // SAFETY: forwarded from this function's contract.
    unsafe { chunk_step(x, b, chunk, h, state, state_is_zero, &emit, false, tiles) };
}

/// A chunk's own state contribution Kᵀ (V ⊙ ζ), ζ_j = γ^(L−1−j), of tokens `chunk` (row `b`,
/// head `h`) into `dst` (K×V): `dst ← own` (`beta = None`) or `dst ← beta·dst + own`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn own_state<T: CpuElement>(
    x: &Inputs<'_, T>,
    b: usize,
    chunk: Range<usize>,
    h: usize,
    log2g: f32,
    dst: &mut [f32],
    beta: Option<f32>,
    tiles: &mut Tiles,
) {
    let (dk, dv, len) = (x.dk, x.dv, chunk.len());
    x.load_kv(b, chunk, h, tiles);
    decay_table(log2g, len, &mut tiles.pow);
    for (j, vrow) in tiles.v.chunks_exact_mut(dv).take(len).enumerate() {
        super::simd::scale(vrow, tiles.pow[len - 1 - j]);
    }
    let (kt, vt) = (View::transposed(&tiles.k, dk), View::rows(&tiles.v, dv));
    matmul(dk, dv, len, dst, dv, beta, kt, vt);
}

/// One chunk of one head, its inputs already in `tiles` and γ^0..=γ^L in `tiles.pow`;
/// with `advance` the state steps past the chunk, otherwise it is only read.
///
/// # Safety
/// As [`chunkwise_heads`].
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_step<T: CpuElement>(
    x: &Inputs<'_, T>,
    b: usize,
    chunk: Range<usize>,
    h: usize,
    state: &mut [f32],
    state_is_zero: bool,
    emit: &Emit<'_, '_, T>,
    advance: bool,
    tiles: &mut Tiles,
) {
    let (dk, dv, len) = (x.dk, x.dv, chunk.len());
    let Tiles {
        q,
        k,
        v,
        a,
        o,
        pow,
        rev,
    } = tiles;
    if let Emit::Outputs(out) = emit {
        // A = Q Kᵀ ⊙ D  (L, L)
        matmul(
            len,
            len,
            dk,
            a,
            len,
            None,
            View::rows(q, dk),
            View::transposed(k, dk),
        );
        // Row j scales by γ^j … γ^0 on i ≤ j: a contiguous, forward run of `rev`.
        rev.clear();
        rev.extend(pow[..len].iter().rev());
        for (j, arow) in a.chunks_exact_mut(len).take(len).enumerate() {
            let (lower, upper) = arow.split_at_mut(j + 1);
            for (aji, d) in lower.iter_mut().zip(&rev[len - 1 - j..]) {
                *aji *= d;
            }
            upper.fill(0.0);
        }
        // O = A V  (L, V)
        matmul(
            len,
            dv,
            len,
            o,
            dv,
            None,
            View::rows(a, len),
            View::rows(v, dv),
        );
        if !state_is_zero {
            // O += (diag(ξ) Q) R, ξ_j = γ^(j+1).
            for (j, qrow) in q.chunks_exact_mut(dk).take(len).enumerate() {
                super::simd::scale(qrow, pow[j + 1]);
            }
            matmul(
                len,
                dv,
                dk,
                o,
                dv,
                Some(1.0),
                View::rows(q, dk),
                View::rows(state, dv),
            );
        }
        // SAFETY: forwarded from this function's contract.
        unsafe { x.store(b, chunk, h, o, out) };
    }
    if !advance {
        return;
    }
    // R ← γ^L R + Kᵀ (diag(ζ) V), ζ_j = γ^(L−1−j).
    for (j, vrow) in v.chunks_exact_mut(dv).take(len).enumerate() {
        super::simd::scale(vrow, pow[len - 1 - j]);
    }
    matmul(
        dk,
        dv,
        len,
        state,
        dv,
        Some(pow[len]),
        View::transposed(k, dk),
        View::rows(v, dv),
    );
}
