//! Dispatch of one `run` to the f64 reference form it names, including packed
//! variable-length batches.

use clap::ValueEnum;
use retention_core::{CuSeqlens, HostTensor, RetentionError};
use retention_kernels::reference::{
    RetentionParams, chunkwise, chunkwise_varlen, parallel, recurrent, recurrent_varlen,
};

use crate::error::CliError;
use crate::input_file::RunInputs;

/// Which of the three equivalent forms of ARCHITECTURE §1 computes the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Form {
    /// O = s·((Q Kᵀ) ⊙ D) V; no initial or final state.
    Parallel,
    /// One token at a time through the K×V state.
    Recurrent,
    /// Chunks of `--chunk` tokens, carrying the state between chunks.
    Chunkwise,
}

impl Form {
    /// The flag value (`parallel`, `recurrent`, `chunkwise`).
    pub fn name(self) -> &'static str {
        match self {
            Form::Parallel => "parallel",
            Form::Recurrent => "recurrent",
            Form::Chunkwise => "chunkwise",
        }
    }
}

/// The exact (f64) result: o `[B, T, H, V]` and, except for parallel, H_T `[B or N, H, K, V]`.
pub struct Outputs {
    /// Retention output.
    pub o: HostTensor<f64>,
    /// Final state per row (or per sequence of a packed batch).
    pub ht: Option<HostTensor<f64>>,
}

/// Compute `form` over `inputs` in the f64 reference.
///
/// # Errors
/// Whatever the reference rejects (state shape, γ count, scale, chunk, cu_seqlens), and an
/// initial state given to the parallel form, which has none.
pub fn compute(
    form: Form,
    chunk: usize,
    inputs: &RunInputs,
    params: &RetentionParams,
) -> Result<Outputs, CliError> {
    let (q, k, v, h0) = (&inputs.q, &inputs.k, &inputs.v, inputs.h0.as_ref());
    if form == Form::Parallel && h0.is_some() {
        return Err(CliError::BadFlag(
            "the parallel form takes no initial state, but the input has `h0`; use --form recurrent or chunkwise".into(),
        ));
    }
    if form == Form::Chunkwise && chunk == 0 {
        return Err(RetentionError::ZeroChunk.into());
    }
    let cu = inputs
        .cu_seqlens
        .as_ref()
        .map(|bounds| CuSeqlens::from_i64(bounds, inputs.shape().seq_len))
        .transpose()?;
    let (o, ht) = match (form, cu) {
        (Form::Parallel, None) => (parallel(q, k, v, params)?, None),
        (Form::Parallel, Some(cu)) => (parallel_varlen(inputs, &cu, params)?, None),
        (Form::Recurrent, None) => {
            let (o, ht) = recurrent(q, k, v, params, h0)?;
            (o, Some(ht))
        }
        (Form::Recurrent, Some(cu)) => {
            let (o, ht) = recurrent_varlen(q, k, v, &cu, params, h0)?;
            (o, Some(ht))
        }
        (Form::Chunkwise, None) => {
            let (o, ht) = chunkwise(q, k, v, params, chunk, h0)?;
            (o, Some(ht))
        }
        (Form::Chunkwise, Some(cu)) => {
            let (o, ht) = chunkwise_varlen(q, k, v, &cu, params, chunk, h0)?;
            (o, Some(ht))
        }
    };
    Ok(Outputs { o, ht })
}

/// Rows `range` of a packed `[1, ΣT, H, D]` tensor as its own `[1, len, H, D]` tensor.
fn packed_rows(t: &HostTensor<f64>, range: std::ops::Range<usize>) -> HostTensor<f64> {
    let [_, _, h, d] = [t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]];
    let row = h * d;
    let data = t.data()[range.start * row..range.end * row].to_vec();
    HostTensor::from_f64(vec![1, range.len(), h, d], &data)
        .expect("a row range of a packed tensor has the length its shape says")
}

/// The parallel form has no state to reset at sequence boundaries, so a packed batch runs
/// it once per sequence (empty sequences contribute nothing).
fn parallel_varlen(
    inputs: &RunInputs,
    cu: &CuSeqlens,
    params: &RetentionParams,
) -> Result<HostTensor<f64>, CliError> {
    let shape = inputs.shape();
    if shape.batch != 1 {
        return Err(RetentionError::ShapeMismatch {
            tensor: "q".into(),
            expected: "packed [B=1, T=ΣT, H, K] with cu_seqlens".into(),
            got: format!("B={}", shape.batch),
        }
        .into());
    }
    params.gammas.check_heads(shape.heads)?;
    let mut o = HostTensor::zeros(shape.vo_shape());
    let row = shape.heads * shape.dv;
    for n in 0..cu.num_seqs() {
        let range = cu.range(n);
        if range.is_empty() {
            continue;
        }
        let seq_o = parallel(
            &packed_rows(&inputs.q, range.clone()),
            &packed_rows(&inputs.k, range.clone()),
            &packed_rows(&inputs.v, range.clone()),
            params,
        )?;
        o.data_mut()[range.start * row..range.end * row].copy_from_slice(seq_o.data());
    }
    Ok(o)
}
