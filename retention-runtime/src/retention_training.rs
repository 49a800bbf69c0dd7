//! The training API of [`Retention`] on host tensors: the backward of every form (ARCHITECTURE
//! §7), a chunkwise forward that returns what its backward needs, and the backward of the
//! gated MSR epilogue.
//!
//! On `Device::Cpu` these run the fast CPU kernels (`retention_kernels::cpu`): multi-threaded,
//! gemm-based, f32 accumulation. On `Device::Emulated` and `Device::Cuda`, the chunkwise and
//! recurrent backwards, dense and varlen, run the GPU chunkwise-backward kernels
//! (`gpu_backward`; the recurrent gradients are the chunkwise ones at any chunk), the parallel
//! backward its kernels (`training_parallel`) and the epilogue's backward its kernel
//! (`epilogue_device`), and `chunkwise_for_training` the device forward plus the chunk-state
//! kernels (`gpu_training_forward`, C in {32, 64}; other chunks are a typed
//! [`RetentionError::Unsupported`](retention_core::RetentionError::Unsupported) — never a wrong answer, never a panic).
//!
//! The device-tensor forms are `chunkwise_backward_into`, `chunkwise_backward_varlen_into`
//! (`training_device`) and `parallel_backward_into` (`training_parallel`); the other
//! backwards have none yet.
//!
//! What the forward saves: [`Retention::chunkwise_for_training`] keeps the f32 state entering
//! every chunk, K·V·4/C bytes per token-head (K = V = 128, C = 64: 1 KiB), so the backward
//! skips recomputing them (2KV FLOPs per token-head and a second read of k and v).
//! [`Retention::chunkwise_backward`] saves nothing and recomputes them.

use retention_core::{CuSeqlens, HostTensor, Result};
use retention_kernels::cpu::{self, CpuElement, CpuEpilogueGradients, CpuGradients};

use crate::retention::Retention;

/// Gradients of retention: dq, dk, dv in the input dtype; dH0 and d log γ in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T: CpuElement> {
    /// dL/dq `[B, T, H, K]`.
    pub dq: HostTensor<T>,
    /// dL/dk `[B, T, H, K]`.
    pub dk: HostTensor<T>,
    /// dL/dv `[B, T, H, V]`.
    pub dv: HostTensor<T>,
    /// dL/dH0 `[B, H, K, V]` (`[N, H, K, V]` varlen), f32; dH0 at H0 = 0 when no h0 was
    /// given. `None` for the parallel form, which has no initial state.
    pub dh0: Option<HostTensor<f32>>,
    /// dL/dlog γ_h `[H]`, f32, summed over rows (sequences) and tokens: the gradient with
    /// respect to each head's decay, so decays can be learned.
    pub dlog_gamma: HostTensor<f32>,
}

impl<T: CpuElement> From<CpuGradients<T>> for Gradients<T> {
    fn from(g: CpuGradients<T>) -> Self {
        Self {
            dq: g.dq,
            dk: g.dk,
            dv: g.dv,
            dh0: Some(g.dh0),
            dlog_gamma: g.dlog_gamma,
        }
    }
}

/// Gradients of the gated epilogue: dL/do and dL/dg `[B, T, H, V]` in the input dtype.
pub type EpilogueGradients<T> = CpuEpilogueGradients<T>;

/// What [`Retention::chunkwise_for_training`] returns: the forward's outputs and what
/// [`Retention::chunkwise_backward_saved`] needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingForward<T: CpuElement> {
    /// o `[B, T, H, V]` in the input dtype.
    pub o: HostTensor<T>,
    /// H_T `[B, H, K, V]`, f32.
    pub ht: HostTensor<f32>,
    /// The f32 state entering every chunk `[B·⌈T/C⌉, H, K, V]`: chunks in token order, row
    /// after row; chunk 0 of a row holds its H0 (zeros without one).
    pub states: HostTensor<f32>,
    /// The chunk size the states belong to.
    pub chunk: usize,
}

/// Host tensors q, k, v.
type HostQkv<'a, T> = (&'a HostTensor<T>, &'a HostTensor<T>, &'a HostTensor<T>);

impl Retention {
    /// Gradients of [`Retention::chunkwise`] with chunk `chunk` (any chunk ≥ 1) for the
    /// upstream gradient `d_o` `[B, T, H, V]` and optional `d_ht` `[B, H, K, V]` f32, with
    /// optional initial state `h0`. The chunk states are recomputed from k, v and h0. On a
    /// GPU-like device the chunkwise-backward kernels run (through the device API: upload,
    /// run, download).
    ///
    /// # Errors
    /// Zero chunk, shape mismatches (of q, k, v, h0, `d_o`, `d_ht`), gammas, scale; on a GPU
    /// a (K, V) no backward kernel serves.
    pub fn chunkwise_backward<T: CpuElement>(
        &self,
        (q, k, v): HostQkv<'_, T>,
        chunk: usize,
        h0: Option<&HostTensor<f32>>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        if self.gpu().is_some() {
            return self.chunkwise_backward_via_device((q, k, v), (None, chunk), h0, d_o, d_ht);
        }
        cpu::chunkwise_backward(q, k, v, self.params(), chunk, h0, d_o, d_ht).map(Into::into)
    }

    /// The chunkwise forward for training: o, H_T and the f32 state entering every chunk
    /// (see [`TrainingForward`]). o and H_T equal [`Retention::chunkwise`]'s within the
    /// forward's tolerances (bit for bit while the (row, head) pairs are at least the threads;
    /// with fewer pairs each splits the sequence its own way, so the roundings differ).
    ///
    /// On a GPU-like device the device chunkwise forward runs, then phase 1 of the two-phase
    /// forward at one chunk per segment and the `boundary_states` fold write the states
    /// (`gpu_training_forward`; C in {32, 64}).
    ///
    /// # Errors
    /// As [`Retention::chunkwise`]; on a GPU-like device [`RetentionError::Unsupported`](retention_core::RetentionError::Unsupported) for
    /// a chunk other than 32 or 64.
    pub fn chunkwise_for_training<T: CpuElement>(
        &self,
        (q, k, v): HostQkv<'_, T>,
        chunk: usize,
        h0: Option<&HostTensor<f32>>,
    ) -> Result<TrainingForward<T>> {
        if self.gpu().is_some() {
            return self.chunkwise_for_training_via_device((q, k, v), chunk, h0);
        }
        let f = cpu::chunkwise_with_states(q, k, v, self.params(), chunk, h0)?;
        Ok(TrainingForward {
            o: f.o,
            ht: f.ht,
            states: f.states,
            chunk,
        })
    }

    /// [`Retention::chunkwise_backward`] from the states a
    /// [`Retention::chunkwise_for_training`] call with the same q, k, v (and h0) saved: no
    /// recompute. dH0 is returned as ever (H0 is the saved chunk-0 state). On a GPU-like device
    /// the GPU backward recomputes the states on chip (from H0 = the saved chunk-0 states).
    ///
    /// # Errors
    /// As [`Retention::chunkwise_backward`], plus a shape mismatch of the saved states.
    pub fn chunkwise_backward_saved<T: CpuElement>(
        &self,
        (q, k, v): HostQkv<'_, T>,
        saved: &TrainingForward<T>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        if self.gpu().is_some() {
            return self.chunkwise_backward_saved_via_device((q, k, v), saved, d_o, d_ht);
        }
        let p = self.params();
        cpu::chunkwise_backward_with_states(q, k, v, p, saved.chunk, &saved.states, d_o, d_ht)
            .map(Into::into)
    }

    /// Gradients of [`Retention::recurrent`] (the same function as the chunkwise form, so
    /// computed chunk by chunk; on a GPU-like device by the chunkwise-backward kernels, whose
    /// gradients do not depend on the chunk).
    ///
    /// # Errors
    /// As [`Retention::chunkwise_backward`].
    pub fn recurrent_backward<T: CpuElement>(
        &self,
        (q, k, v): HostQkv<'_, T>,
        h0: Option<&HostTensor<f32>>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        if self.gpu().is_some() {
            let at = (None, RECURRENT_CHUNK);
            return self.chunkwise_backward_via_device((q, k, v), at, h0, d_o, d_ht);
        }
        cpu::recurrent_backward(q, k, v, self.params(), h0, d_o, d_ht).map(Into::into)
    }

    /// Gradients of [`Retention::parallel`] for the upstream gradient `d_o` `[B, T, H, V]`;
    /// `dh0` is `None`. On a GPU-like device the four kernels of the parallel backward run
    /// (dq, dk, dv and per-CTA d log γ partials, summed per head on the host).
    ///
    /// # Errors
    /// Shape mismatches, gammas, scale; on a GPU-like device a (K, V) no kernel serves.
    pub fn parallel_backward<T: CpuElement>(
        &self,
        (q, k, v): HostQkv<'_, T>,
        d_o: &HostTensor<T>,
    ) -> Result<Gradients<T>> {
        if self.gpu().is_some() {
            return self.parallel_backward_on_device((q, k, v), d_o);
        }
        let g = cpu::parallel_backward(q, k, v, self.params(), d_o)?;
        Ok(Gradients {
            dq: g.dq,
            dk: g.dk,
            dv: g.dv,
            dh0: None,
            dlog_gamma: g.dlog_gamma,
        })
    }

    /// Gradients of [`Retention::chunkwise_varlen`]: packed inputs `[1, ΣT, H, ·]`, `h0`,
    /// `d_ht` and dH0 `[N, H, K, V]`; chunks restart at every sequence boundary. On a
    /// GPU-like device the varlen chunkwise-backward kernels run (through
    /// [`Retention::chunkwise_backward_varlen_into`]: upload, run, download).
    ///
    /// # Errors
    /// As [`Retention::chunkwise_varlen`], plus shape mismatches of `d_o` and `d_ht`.
    pub fn chunkwise_varlen_backward<T: CpuElement>(
        &self,
        (q, k, v): HostQkv<'_, T>,
        cu_seqlens: &CuSeqlens,
        (h0, chunk): (Option<&HostTensor<f32>>, usize),
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        if self.gpu().is_some() {
            let at = (Some(cu_seqlens), chunk);
            return self.chunkwise_backward_via_device((q, k, v), at, h0, d_o, d_ht);
        }
        let p = self.params();
        retention_kernels::cpu::chunkwise_backward_varlen(
            q, k, v, cu_seqlens, p, chunk, h0, d_o, d_ht,
        )
        .map(Into::into)
    }

    /// Gradients of [`Retention::recurrent_varlen`] (computed chunk by chunk, as
    /// [`Retention::recurrent_backward`]).
    ///
    /// # Errors
    /// As [`Retention::chunkwise_varlen_backward`] (whose GPU kernels it runs on GPU-like
    /// devices).
    pub fn recurrent_varlen_backward<T: CpuElement>(
        &self,
        qkv: HostQkv<'_, T>,
        cu_seqlens: &CuSeqlens,
        h0: Option<&HostTensor<f32>>,
        d_o: &HostTensor<T>,
        d_ht: Option<&HostTensor<f32>>,
    ) -> Result<Gradients<T>> {
        self.chunkwise_varlen_backward(qkv, cu_seqlens, (h0, RECURRENT_CHUNK), d_o, d_ht)
    }

    /// Gradients of [`Retention::msr_epilogue`] (y = RMSNorm_head(o) ⊙ swish(g)) for the
    /// upstream gradient `dy` `[B, T, H, V]`: do and dg in the input dtype, computed in f32.
    ///
    /// On GPU-like devices the epilogue family's backward kernel runs
    /// ([`Retention::msr_epilogue_backward_into`]: upload, run, download).
    ///
    /// # Errors
    /// Shape mismatches of o, g, `dy`; eps not finite or negative; on a GPU-like device V
    /// beyond what its kernel serves.
    pub fn msr_epilogue_backward<T: CpuElement>(
        &self,
        o: &HostTensor<T>,
        g: &HostTensor<T>,
        eps: f64,
        dy: &HostTensor<T>,
    ) -> Result<EpilogueGradients<T>> {
        if self.gpu().is_some() {
            let (d_o, dg) = self.msr_epilogue_backward_via_device((o, g, dy), eps)?;
            return Ok(EpilogueGradients { d_o, dg });
        }
        cpu::msr_epilogue_backward(o, g, eps, dy)
    }
}

/// The chunk the recurrent backward runs at: the recurrent and chunkwise forms compute the
/// same function, and a chunk of 64 runs its products at a size gemm serves well.
const RECURRENT_CHUNK: usize = 64;
