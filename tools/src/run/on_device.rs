//! `run --device cpu|emulated|cuda`: the same problem through the runtime's [`Retention`]
//! (the fast CPU kernels, or the catalog's PTX on the emulator or a GPU), so a user can
//! compare devices on one file. `--device reference` stays the exact f64 path of
//! [`super::forms`]. Packed batches (`cu_seqlens`) run the runtime's varlen methods.

use half::{bf16, f16};
use kernel_gen::Arch;
use retention_core::{CuSeqlens, Dtype, HostTensor};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, Retention};

use super::forms::{Form, Outputs};
use crate::error::CliError;
use crate::input_file::RunInputs;

/// Compute `form` over `inputs` on `device` (o in the input dtype, H_T f32, both widened to
/// f64 exactly for writing).
///
/// # Errors
/// The parallel form of a packed batch (no runtime method yet; use the reference); any
/// runtime error (no CUDA device, a head size no kernel serves, bad shapes or boundaries).
pub fn compute(
    device: &Device,
    form: Form,
    chunk: usize,
    inputs: &RunInputs,
    params: &RetentionParams,
) -> Result<Outputs, CliError> {
    if inputs.cu_seqlens.is_some() && form == Form::Parallel {
        return Err(CliError::NotSupported {
            what: format!("the parallel form of a packed batch (cu_seqlens) on {device}"),
            hint: "; use --device reference".into(),
        });
    }
    let ret = Retention::new(device, params.clone())?;
    match inputs.dtype {
        Dtype::F32 => typed::<f32>(&ret, form, chunk, inputs),
        Dtype::F16 => typed::<f16>(&ret, form, chunk, inputs),
        Dtype::Bf16 => typed::<bf16>(&ret, form, chunk, inputs),
    }
}

fn typed<T: CpuElement>(
    ret: &Retention,
    form: Form,
    chunk: usize,
    inputs: &RunInputs,
) -> Result<Outputs, CliError> {
    // The inputs came from this dtype, so narrowing back is exact.
    let (q, k, v) = (
        inputs.q.cast::<T>(),
        inputs.k.cast::<T>(),
        inputs.v.cast::<T>(),
    );
    let h0 = inputs.h0.as_ref().map(HostTensor::cast::<f32>);
    let cu = inputs
        .cu_seqlens
        .as_ref()
        .map(|bounds| CuSeqlens::from_i64(bounds, inputs.shape().seq_len))
        .transpose()?;
    if let Some(cu) = &cu {
        let (o, ht) = match form {
            Form::Chunkwise => ret.chunkwise_varlen((&q, &k, &v), cu, h0.as_ref(), chunk)?,
            _ => ret.recurrent_varlen((&q, &k, &v), cu, h0.as_ref())?,
        };
        return Ok(Outputs {
            o: o.to_f64(),
            ht: Some(ht.to_f64()),
        });
    }
    let (o, ht) = match form {
        Form::Parallel => (ret.parallel(&q, &k, &v)?, None),
        Form::Recurrent => {
            let (o, ht) = ret.recurrent(&q, &k, &v, h0.as_ref())?;
            (o, Some(ht))
        }
        Form::Chunkwise => {
            let (o, ht) = ret.chunkwise(&q, &k, &v, chunk, h0.as_ref())?;
            (o, Some(ht))
        }
    };
    Ok(Outputs {
        o: o.to_f64(),
        ht: ht.map(|t| t.to_f64()),
    })
}

/// The runtime device a `--device` flag names.
///
/// # Errors
/// `NoDevice` from the runtime when CUDA is asked for and absent.
pub fn runtime_device(emulated: bool, arch: Arch) -> Result<Device, CliError> {
    if emulated {
        Ok(Device::Emulated(arch))
    } else {
        Ok(Device::from_name("cuda")?)
    }
}
