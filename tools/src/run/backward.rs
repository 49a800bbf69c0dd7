//! `retention run --backward`: the forward of `--form` and its backward for the upstream
//! gradients in the input file.
//!
//! The file holds, beside q, k, v (and h0, cu_seqlens): `do` `[B, T, H, V]` in the input dtype
//! and optionally `dht` `[B or N, H, K, V]` f32 — or, for the gated epilogue
//! y = RMSNorm_head(o) ⊙ swish(g), `dy` and `g` `[B, T, H, V]` in the input dtype instead of
//! `do`: then do is the epilogue's backward at the forward's o, and dg is written too.
//! Written: o, ht (except parallel), dq, dk, dv (and dg) in the input dtype; dh0 (except
//! parallel) and dlog_gamma `[H]` in f32.
//!
//! `--device reference` computes everything in f64 and rounds once; the other devices run the
//! runtime's training API (`backward_runtime`): the fast CPU kernels, or on `emulated`/`cuda`
//! the GPU backward kernels (chunkwise and recurrent, dense and varlen; parallel; the
//! epilogue's backward).

use retention_core::{CuSeqlens, Dtype, HostTensor};
use retention_kernels::reference::{self, RetentionParams};

use super::forms::{self, Form};
use crate::error::CliError;
use crate::input_file::{self, RunInputs};
use crate::output_file::OutputTensor;

/// The upstream gradients read from the input file (widened exactly to f64).
pub struct Upstream {
    /// dL/do, when given directly.
    pub d_o: Option<HostTensor<f64>>,
    /// dL/dH_T (f32 in the file).
    pub d_ht: Option<HostTensor<f64>>,
    /// dL/dy and the gate g of the epilogue, when do is to be derived through it.
    pub epilogue: Option<(HostTensor<f64>, HostTensor<f64>)>,
}

impl Upstream {
    /// Read `do`, `dht`, `dy` and `g` from the input file's bytes.
    ///
    /// # Errors
    /// [`CliError::BadInput`] for wrong dtypes, `dy` without `g` (or the reverse), or neither
    /// `do` nor `dy` + `g` — or both.
    pub fn load(bytes: &[u8], path: &std::path::Path, dtype: Dtype) -> Result<Self, CliError> {
        let get = |name: &str, dt: Dtype| input_file::load_optional(bytes, path, name, dt);
        let d_o = get("do", dtype)?;
        let d_ht = get("dht", Dtype::F32)?;
        let epilogue = match (get("dy", dtype)?, get("g", dtype)?) {
            (Some(dy), Some(g)) => Some((dy, g)),
            (None, None) => None,
            _ => {
                return Err(CliError::bad_input(
                    path,
                    "the epilogue's backward needs both `dy` and `g`",
                ));
            }
        };
        match (&d_o, &epilogue) {
            (Some(_), None) | (None, Some(_)) => Ok(Self {
                d_o,
                d_ht,
                epilogue,
            }),
            (None, None) => Err(CliError::bad_input(
                path,
                "--backward needs the upstream gradient `do` (or `dy` and `g` for the epilogue)",
            )),
            (Some(_), Some(_)) => Err(CliError::bad_input(
                path,
                "give either `do` or `dy` and `g` (the epilogue's), not both",
            )),
        }
    }
}

/// The forward's outputs and every gradient, widened exactly to f64 for writing.
pub struct BackwardOutputs {
    /// Retention output o.
    pub o: HostTensor<f64>,
    /// Final state, except for parallel.
    pub ht: Option<HostTensor<f64>>,
    /// dL/dq, dL/dk, dL/dv.
    pub dq: HostTensor<f64>,
    /// See `dq`.
    pub dk: HostTensor<f64>,
    /// See `dq`.
    pub dv: HostTensor<f64>,
    /// dL/dH0, except for parallel.
    pub dh0: Option<HostTensor<f64>>,
    /// dL/dlog γ per head.
    pub dlog_gamma: HostTensor<f64>,
    /// dL/dg of the epilogue, when it ran.
    pub dg: Option<HostTensor<f64>>,
}

impl BackwardOutputs {
    /// The tensors to write: gradients of inputs in the input dtype, of states and decays in
    /// f32.
    pub fn tensors(&self, dtype: Dtype) -> Vec<OutputTensor> {
        let mut out = vec![super::output("o", dtype, &self.o)];
        if let Some(ht) = &self.ht {
            out.push(super::output("ht", Dtype::F32, ht));
        }
        for (name, t) in [("dq", &self.dq), ("dk", &self.dk), ("dv", &self.dv)] {
            out.push(super::output(name, dtype, t));
        }
        if let Some(dh0) = &self.dh0 {
            out.push(super::output("dh0", Dtype::F32, dh0));
        }
        out.push(super::output("dlog_gamma", Dtype::F32, &self.dlog_gamma));
        if let Some(dg) = &self.dg {
            out.push(super::output("dg", dtype, dg));
        }
        out
    }
}

/// Refusals shared by every device: dH_T for the parallel form (it has no final state), and
/// the parallel backward of a packed batch.
pub fn check_form(form: Form, inputs: &RunInputs, up: &Upstream) -> Result<(), CliError> {
    if form == Form::Parallel && up.d_ht.is_some() {
        return Err(CliError::BadFlag(
            "the parallel form has no final state, but the input has `dht`; use --form recurrent or chunkwise".into(),
        ));
    }
    if form == Form::Parallel && inputs.cu_seqlens.is_some() {
        return Err(CliError::NotSupported {
            what: "the parallel backward of a packed batch (cu_seqlens)".into(),
            hint: "; use --form chunkwise or recurrent".into(),
        });
    }
    Ok(())
}

/// The forward and backward of `form` in the f64 reference.
///
/// # Errors
/// Whatever the reference rejects (shapes of the upstream gradients included), and
/// [`check_form`]'s refusals.
pub fn reference(
    form: Form,
    chunk: usize,
    inputs: &RunInputs,
    params: &RetentionParams,
    (up, eps): (&Upstream, f64),
) -> Result<BackwardOutputs, CliError> {
    check_form(form, inputs, up)?;
    let fwd = forms::compute(form, chunk, inputs, params)?;
    let (d_o, dg) = match (&up.d_o, &up.epilogue) {
        (Some(d_o), _) => (d_o.clone(), None),
        (None, Some((dy, g))) => {
            let e = reference::msr_epilogue_backward(&fwd.o, g, eps, dy)?;
            (e.d_o, Some(e.dg))
        }
        (None, None) => unreachable!("Upstream::load requires do or dy + g"),
    };
    let (q, k, v, h0) = (&inputs.q, &inputs.k, &inputs.v, inputs.h0.as_ref());
    let d_ht = up.d_ht.as_ref();
    let cu = inputs
        .cu_seqlens
        .as_ref()
        .map(|b| CuSeqlens::from_i64(b, inputs.shape().seq_len))
        .transpose()?;
    let g = match (form, &cu) {
        (Form::Parallel, _) => {
            let g = reference::parallel_backward(q, k, v, params, &d_o)?;
            reference::Gradients {
                dq: g.dq,
                dk: g.dk,
                dv: g.dv,
                dh0: HostTensor::zeros(vec![0]),
                dlog_gamma: g.dlog_gamma,
            }
        }
        (Form::Recurrent, None) => reference::recurrent_backward(q, k, v, params, h0, &d_o, d_ht)?,
        (Form::Recurrent, Some(cu)) => {
            reference::recurrent_backward_varlen(q, k, v, cu, params, h0, &d_o, d_ht)?
        }
        (Form::Chunkwise, None) => {
            reference::chunkwise_backward(q, k, v, params, chunk, h0, &d_o, d_ht)?
        }
        (Form::Chunkwise, Some(cu)) => {
            reference::chunkwise_backward_varlen(q, k, v, cu, params, chunk, h0, &d_o, d_ht)?
        }
    };
    Ok(BackwardOutputs {
        o: fwd.o,
        ht: fwd.ht,
        dq: g.dq,
        dk: g.dk,
        dv: g.dv,
        dh0: (form != Form::Parallel).then_some(g.dh0),
        dlog_gamma: g.dlog_gamma,
        dg,
    })
}
