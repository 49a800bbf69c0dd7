//! The parallel form on a GPU-like device: the catalog's flash-style parallel kernel (query
//! tiles against the key tiles at or before them, the decay mask computed on the fly, no T×T
//! matrix in memory), its arguments filled by parameter name.

use kernel_gen::emu::Launch;
use kernel_gen::{KernelSpec, LaunchSize, plan};
use retention_core::{Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::gpu::{Gpu, param_index, sequence_param};
use crate::gpu_decode::{dtype_of, gamma_set, widen};

/// The parallel spec for this problem on `gpu` when the catalog's generator serves the
/// (K, V, dtype), with the catalog's tile for the dtype.
pub(crate) fn parallel_spec<T: Element>(
    gpu: &Gpu,
    gammas: &Gammas,
    shape: &RetentionShape,
) -> Result<KernelSpec> {
    let dtype = dtype_of::<T>()?;
    let spec = KernelSpec::parallel_default(
        shape.dk as u32,
        shape.dv as u32,
        gamma_set(gammas),
        dtype,
        gpu.arch(),
    );
    spec.validate().map_err(RetentionError::from)?;
    Ok(spec)
}

/// o `[B,T,H,V]` = s·((Q Kᵀ) ⊙ D) V on `gpu`.
pub(crate) fn parallel<T: Element>(
    gpu: &Gpu,
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
) -> Result<HostTensor<T>> {
    let mut launch = parallel_launch(spec, shape, gammas, scale, (q, k, v))?;
    gpu.run(spec, &mut launch, Vec::new())?;
    let at = param_index(spec, "p_o")?;
    let o = launch
        .buffer(at)
        .ok_or_else(|| RetentionError::KernelLoad("no output buffer".into()))?;
    HostTensor::new(shape.vo_shape(), widen(spec.dtype, o))
}

/// The launch description of the parallel kernel `spec` over q, k, v.
pub(crate) fn parallel_launch<T: Element>(
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
) -> Result<Launch> {
    let s = shape;
    let size = LaunchSize {
        rows: s.batch as u32,
        heads: s.heads as u32,
        tokens: s.seq_len as u32,
    };
    let plan = plan(spec, size).map_err(RetentionError::from)?;
    let geometry = plan.geometry;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for &name in &plan.params {
        let value = sequence_param(name, spec, s, gammas, scale, (q, k, v)).ok_or_else(|| {
            RetentionError::KernelLoad(format!(
                "{}: the runtime cannot fill parameter `{name}`",
                spec.entry()
            ))
        })?;
        launch = launch.arg(value);
    }
    Ok(launch)
}
