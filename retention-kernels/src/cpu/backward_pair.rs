//! The chunkwise backward of one long (sequence, head) pair with its chunks spread over the
//! threads — for problems with fewer pairs than threads. Math as [`super::backward_kernel`].

use std::ops::Range;

use rayon::prelude::*;

use super::backward_kernel::{
    BackwardInputs, BackwardOutputs, BackwardTiles, adjoint_contribution, backward_chunk,
};
use super::chunk_kernel::{Inputs, Tiles, own_state};
use super::element::CpuElement;
use super::simd;

/// Where one pair's chunk-entering states come from in the chunk-parallel backward.
#[derive(Clone, Copy)]
pub(crate) enum PairStates<'s> {
    /// Recompute from this H0 (`None`: zero).
    Recompute(Option<&'s [f32]>),
    /// Saved: chunk i's K×V state starts at `i · stride` of the slice.
    Saved(&'s [f32], usize),
}

/// One (sequence, head) pair, for the chunk-parallel backward.
pub(crate) struct Pair<'p, 'a, T> {
    // The forward's and the backward's views of the inputs, the gradient outputs, the pair's
    // row, tokens and head, the chunk and log2 γ.
    pub fwd: &'p Inputs<'a, T>,
    pub x: &'p BackwardInputs<'a, T>,
    pub out: &'p BackwardOutputs<'p, 'a, T>,
    pub b: usize,
    pub range: Range<usize>,
    pub h: usize,
    pub c: usize,
    pub log2g: f32,
}

impl<T: CpuElement> Pair<'_, '_, T> {
    /// Tokens of chunk `i`.
    fn chunk(&self, i: usize) -> Range<usize> {
        let start = self.range.start + i * self.c;
        start..(start + self.c).min(self.range.end)
    }

    /// The pair's backward with its chunks spread over the threads: (1) every chunk's own
    /// state contribution Kᵀ(V ⊙ ζ) in parallel, then a serial scan R_i = γ^L R_{i−1} + own
    /// (or the forward's saved states); (2) every
    /// chunk's own adjoint term Qᵀ(s ξ ⊙ dO) in parallel, then the reverse scan
    /// dR_{i−1} = γ^L dR_i + own; (3) dQ, dK, dV of every chunk in parallel. The scans are
    /// K·V additions per chunk. `adj` holds dH_T on entry and dH0 on return.
    pub(crate) fn backward_chunk_parallel(&self, from: PairStates<'_>, adj: &mut [f32]) -> f64 {
        let (dk, dv, c) = (self.x.dk, self.x.dv, self.c);
        let kv = dk * dv;
        let n = self.range.len().div_ceil(c);
        if n == 0 {
            return 0.0; // an empty sequence: dH0 = dH_T, nothing else
        }
        let gamma_len = |i: usize| (self.chunk(i).len() as f32 * self.log2g).exp2();
        // (1) States entering every chunk.
        let h0 = match from {
            PairStates::Recompute(h0) => Some(h0),
            PairStates::Saved(..) => None,
        };
        let states: Option<Vec<f32>> = h0.map(|h0| {
            let mut all = vec![0.0f32; n * kv];
            if let Some(h0) = h0 {
                all[..kv].copy_from_slice(h0);
            }
            all[kv..].par_chunks_mut(kv).enumerate().for_each_init(
                || Tiles::new(c, dk, dv),
                |tiles, (i, own)| {
                    own_state(
                        self.fwd,
                        self.b,
                        self.chunk(i),
                        self.h,
                        self.log2g,
                        own,
                        None,
                        tiles,
                    );
                },
            );
            for i in 1..n {
                let (done, rest) = all.split_at_mut(i * kv);
                simd::axpy(&mut rest[..kv], gamma_len(i - 1), &done[(i - 1) * kv..]);
            }
            all
        });
        let r_prev = |i: usize| -> Option<&[f32]> {
            match (&states, from) {
                (Some(_), PairStates::Recompute(None)) if i == 0 => None,
                (Some(all), _) => Some(&all[i * kv..(i + 1) * kv]),
                (None, PairStates::Saved(saved, stride)) => Some(&saved[i * stride..][..kv]),
                (None, PairStates::Recompute(_)) => None,
            }
        };
        // (2) dR_i leaving every chunk: slot i−1 takes chunk i's own term, then the scan.
        let mut leaving = vec![0.0f32; n * kv];
        leaving[(n - 1) * kv..].copy_from_slice(adj);
        leaving[..(n - 1) * kv]
            .par_chunks_mut(kv)
            .enumerate()
            .for_each_init(
                || BackwardTiles::new(c, dk, dv),
                |tiles, (slot, own)| {
                    let chunk = self.chunk(slot + 1);
                    adjoint_contribution(self.x, self.b, chunk, self.h, self.log2g, own, tiles);
                },
            );
        for i in (1..n).rev() {
            let (before, from) = leaving.split_at_mut(i * kv);
            simd::axpy(&mut before[(i - 1) * kv..], gamma_len(i), &from[..kv]);
        }
        // dH0 = γ^L dR_0 + chunk 0's own term.
        let mut tiles = BackwardTiles::new(c, dk, dv);
        adjoint_contribution(
            self.x,
            self.b,
            self.chunk(0),
            self.h,
            self.log2g,
            adj,
            &mut tiles,
        );
        simd::axpy(adj, gamma_len(0), &leaving[..kv]);
        // (3) Every chunk's gradients.
        let parts: Vec<f32> = leaving
            .par_chunks_mut(kv)
            .enumerate()
            .map_init(
                || BackwardTiles::new(c, dk, dv),
                |tiles, (i, d_r)| {
                    // SAFETY: chunk i's rows of this pair are written by this task alone.
                    unsafe {
                        backward_chunk(
                            self.x,
                            self.out,
                            self.b,
                            self.chunk(i),
                            self.h,
                            self.log2g,
                            r_prev(i),
                            d_r,
                            false,
                            tiles,
                        )
                    }
                },
            )
            .collect();
        parts.iter().map(|&p| f64::from(p)).sum()
    }
}
