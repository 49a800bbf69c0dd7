//! Fast CPU kernels (multi-threaded, vectorised), each checked against [`crate::reference`].
//!
//! Every op takes f32, f16 or bf16 inputs ([`CpuElement`]) and computes in f32: states and
//! accumulators are f32, decays are `exp2(n · log2 γ)` in f32 from a log2 γ derived in f64,
//! and outputs are narrowed once at the end. Work runs on the rayon pool across
//! (row, head) pairs — and across sequence blocks when those are fewer than the threads; the
//! chunk-level products go through the `gemm` crate, the rest through AVX2/FMA loops chosen
//! at run time with a portable fallback. Validation matches the reference's, error for error.
//!
//! [`attention_decode`] is the softmax-attention KV-cache baseline decode is compared with.
//! [`attention_prefill`] is the causal softmax-attention prompt pass, the baseline of the
//! chunkwise prefill.

mod attention;
mod attention_prefill;
mod backward_kernel;
mod backward_pair;
mod chunk_kernel;
mod chunkwise;
mod chunkwise_backward;
mod chunkwise_states;
mod decode;
mod element;
mod epilogue;
mod epilogue_backward;
mod layer_ops;
mod matmul;
mod parallel;
mod parallel_backward;
mod shared_out;
mod simd;
mod validate;

pub use attention::attention_decode;
pub use attention_prefill::attention_prefill;
pub use chunkwise::{
    ChunkwiseOut, chunkwise, chunkwise_into, chunkwise_varlen, chunkwise_varlen_into,
};
pub use chunkwise_backward::{
    CpuGradients, chunkwise_backward, chunkwise_backward_varlen, chunkwise_backward_with_states,
    recurrent_backward,
};
pub use chunkwise_states::{ChunkwiseForward, chunkwise_varlen_with_states, chunkwise_with_states};
pub use decode::{decode_step, decode_step_in, decode_step_into};
pub use element::CpuElement;
pub use epilogue::{msr_epilogue, msr_epilogue_into};
pub use epilogue_backward::{CpuEpilogueGradients, msr_epilogue_backward};
pub use layer_ops::{gelu_in_place, rms_norm_rows};
pub use parallel::{parallel, parallel_into};
pub use parallel_backward::{CpuParallelGradients, parallel_backward};
