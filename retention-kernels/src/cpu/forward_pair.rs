//! The chunkwise forward that saves chunk states, for one long (sequence, head) pair with its
//! chunks spread over the threads — for problems with fewer pairs than threads (the forward
//! of [`super::chunkwise_with_states`] at B·H < threads would otherwise run on one thread).
//! Math as [`super::chunk_kernel`]; scheme as the backward's ([`super::backward_pair`]).
//!
//! (1) Every chunk's own state contribution Kᵀ(V ⊙ ζ), in parallel, straight into the saved
//! slot of the next chunk; (2) a serial scan R_i = γ^L R_{i−1} + own_i over the slots (K·V
//! additions per chunk); (3) every chunk's outputs from its saved entering state, in parallel.
//! No product is done twice: the saved states are the scan's own buffer.

use std::ops::Range;

use rayon::prelude::*;

use super::chunk_kernel::{Inputs, Tiles, chunk_outputs, own_state};
use super::element::CpuElement;
use super::shared_out::SharedOut;
use super::simd;

/// One (sequence, head) pair of the forward with saved states.
pub(crate) struct ForwardPair<'p, 'a, T> {
    /// The inputs.
    pub x: &'p Inputs<'a, T>,
    /// Batch row, tokens and head of the pair.
    pub b: usize,
    pub range: Range<usize>,
    pub h: usize,
    /// Chunk length and log2 γ of the head.
    pub c: usize,
    pub log2g: f32,
}

impl<T: CpuElement> ForwardPair<'_, '_, T> {
    /// Tokens of chunk `i`.
    fn chunk(&self, i: usize) -> Range<usize> {
        let start = self.range.start + i * self.c;
        start..(start + self.c).min(self.range.end)
    }

    /// Outputs of the pair into `out`; `state` holds H0 (or zeros, `h0_is_zero`) on entry and
    /// H_T on return; the state entering chunk i goes to `saved.rows(first + i·stride, K·V)`.
    ///
    /// # Safety
    /// The pair's output rows and its saved slots are written by this call alone.
    pub(crate) unsafe fn run(
        &self,
        state: &mut [f32],
        h0_is_zero: bool,
        out: &SharedOut<'_, T>,
        saved: &SharedOut<'_, f32>,
        (first, stride): (usize, usize),
    ) {
        let (dk, dv, c) = (self.x.dk, self.x.dv, self.c);
        let kv = dk * dv;
        let n = self.range.len().div_ceil(c);
        if n == 0 {
            return;
        }
        // SAFETY (every `saved.rows` below): slots first + i·stride, i < n, are this pair's
        // alone (the caller's contract); each parallel task touches only its own slot.
        let slot = |i: usize| unsafe { saved.rows(first + i * stride, kv) };
        slot(0).copy_from_slice(state);
        // (1) own contributions of chunks 0..n−1 into slots 1..n; the last chunk's into `last`.
        let mut last = vec![0.0f32; kv];
        let last_out = SharedOut::new(&mut last);
        (0..n).into_par_iter().for_each_init(
            || Tiles::new(c, dk, dv),
            |tiles, i| {
                // SAFETY: `last` is written by task n − 1 alone.
                let dst = if i + 1 < n {
                    slot(i + 1)
                } else {
                    unsafe { last_out.rows(0, kv) }
                };
                own_state(
                    self.x,
                    self.b,
                    self.chunk(i),
                    self.h,
                    self.log2g,
                    dst,
                    None,
                    tiles,
                );
            },
        );
        // (2) the scan; H_T = γ^L R_{n−1} + own_{n−1}.
        let gamma_len = |i: usize| (self.chunk(i).len() as f32 * self.log2g).exp2();
        for i in 1..n {
            simd::axpy(slot(i), gamma_len(i - 1), slot(i - 1));
        }
        simd::axpy(&mut last, gamma_len(n - 1), slot(n - 1));
        state.copy_from_slice(&last);
        // (3) every chunk's outputs from its entering state.
        (0..n).into_par_iter().for_each_init(
            || Tiles::new(c, dk, dv),
            |tiles, i| {
                let zero = h0_is_zero && i == 0;
                // SAFETY: chunk i's output rows of this pair are written by this task alone.
                unsafe {
                    chunk_outputs(
                        self.x,
                        self.b,
                        self.chunk(i),
                        self.h,
                        self.log2g,
                        slot(i),
                        zero,
                        out,
                        tiles,
                    );
                }
            },
        );
    }
}
