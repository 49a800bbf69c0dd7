//! `run --backward --device cpu|emulated|cuda`: the forward and backward through the
//! runtime's public training API, in the input dtype (ARCHITECTURE §7). On the CPU dense
//! chunkwise goes through `chunkwise_for_training` and the backward from its saved states; on
//! a GPU-like device the runtime's backward kernels run (chunkwise and recurrent, dense and
//! varlen; parallel; the epilogue's backward), the forward without saved states.

use half::{bf16, f16};
use retention_core::{CuSeqlens, Dtype, HostTensor};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, Gradients, Retention};

use super::backward::{BackwardOutputs, Upstream, check_form};
use super::forms::Form;
use crate::error::CliError;
use crate::input_file::RunInputs;

/// Forward and backward of `form` on `device`.
///
/// # Errors
/// [`check_form`]'s refusals and any runtime error (shapes of the upstream gradients, γ,
/// scale, chunk, boundaries; a backward the device does not serve yet).
pub fn compute(
    device: &Device,
    form: Form,
    chunk: usize,
    inputs: &RunInputs,
    params: &RetentionParams,
    up: (&Upstream, f64),
) -> Result<BackwardOutputs, CliError> {
    check_form(form, inputs, up.0)?;
    if form == Form::Parallel && inputs.h0.is_some() {
        return Err(CliError::BadFlag(
            "the parallel form takes no initial state, but the input has `h0`; use --form recurrent or chunkwise".into(),
        ));
    }
    let ret = Retention::new(device, params.clone())?;
    match inputs.dtype {
        Dtype::F32 => typed::<f32>(&ret, form, chunk, inputs, up),
        Dtype::F16 => typed::<f16>(&ret, form, chunk, inputs, up),
        Dtype::Bf16 => typed::<bf16>(&ret, form, chunk, inputs, up),
    }
}

fn typed<T: CpuElement>(
    ret: &Retention,
    form: Form,
    chunk: usize,
    inputs: &RunInputs,
    (up, eps): (&Upstream, f64),
) -> Result<BackwardOutputs, CliError> {
    // The inputs came from these dtypes, so narrowing back is exact.
    let (q, k, v) = (
        inputs.q.cast::<T>(),
        inputs.k.cast::<T>(),
        inputs.v.cast::<T>(),
    );
    let qkv = (&q, &k, &v);
    let h0 = inputs.h0.as_ref().map(HostTensor::cast::<f32>);
    let h0 = h0.as_ref();
    let d_ht = up.d_ht.as_ref().map(HostTensor::cast::<f32>);
    let d_ht = d_ht.as_ref();
    let cu = inputs
        .cu_seqlens
        .as_ref()
        .map(|b| CuSeqlens::from_i64(b, inputs.shape().seq_len))
        .transpose()?;
    // The forward; dense chunkwise keeps its chunk states for the backward on the CPU (a
    // GPU-like device recomputes them in its backward kernels).
    let on_cpu = ret.device() == &Device::Cpu;
    let (o, ht, saved) = match (form, &cu) {
        (Form::Parallel, _) => (ret.parallel(&q, &k, &v)?, None, None),
        (Form::Recurrent, None) => {
            let (o, ht) = ret.recurrent(&q, &k, &v, h0)?;
            (o, Some(ht), None)
        }
        (Form::Recurrent, Some(cu)) => {
            let (o, ht) = ret.recurrent_varlen(qkv, cu, h0)?;
            (o, Some(ht), None)
        }
        (Form::Chunkwise, None) if !on_cpu => {
            let (o, ht) = ret.chunkwise(&q, &k, &v, chunk, h0)?;
            (o, Some(ht), None)
        }
        (Form::Chunkwise, None) => {
            let f = ret.chunkwise_for_training(qkv, chunk, h0)?;
            (f.o.clone(), Some(f.ht.clone()), Some(f))
        }
        (Form::Chunkwise, Some(cu)) => {
            let (o, ht) = ret.chunkwise_varlen(qkv, cu, h0, chunk)?;
            (o, Some(ht), None)
        }
    };
    let (d_o, dg) = match (&up.d_o, &up.epilogue) {
        (Some(d_o), _) => (d_o.cast::<T>(), None),
        (None, Some((dy, g))) => {
            let e = ret.msr_epilogue_backward(&o, &g.cast::<T>(), eps, &dy.cast::<T>())?;
            (e.d_o, Some(e.dg.to_f64()))
        }
        (None, None) => unreachable!("Upstream::load requires do or dy + g"),
    };
    let g: Gradients<T> = match (form, &cu, &saved) {
        (Form::Parallel, ..) => ret.parallel_backward(qkv, &d_o)?,
        (Form::Recurrent, None, _) => ret.recurrent_backward(qkv, h0, &d_o, d_ht)?,
        (Form::Recurrent, Some(cu), _) => ret.recurrent_varlen_backward(qkv, cu, h0, &d_o, d_ht)?,
        (Form::Chunkwise, None, Some(f)) => ret.chunkwise_backward_saved(qkv, f, &d_o, d_ht)?,
        (Form::Chunkwise, None, None) => ret.chunkwise_backward(qkv, chunk, h0, &d_o, d_ht)?,
        (Form::Chunkwise, Some(cu), _) => {
            ret.chunkwise_varlen_backward(qkv, cu, (h0, chunk), &d_o, d_ht)?
        }
    };
    Ok(BackwardOutputs {
        o: o.to_f64(),
        ht: ht.map(|t| t.to_f64()),
        dq: g.dq.to_f64(),
        dk: g.dk.to_f64(),
        dv: g.dv.to_f64(),
        dh0: g.dh0.map(|t| t.to_f64()),
        dlog_gamma: g.dlog_gamma.to_f64(),
        dg,
    })
}
