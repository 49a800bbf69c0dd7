//! The flash-style parallel kernel's spec and host-buffer launch description, for kernel
//! timing ([`crate::kernel_timing`]); the public op launches through
//! [`crate::device_launch`].

use kernel_gen::emu::Launch;
use kernel_gen::{KernelSpec, LaunchSize, plan};
use retention_core::{Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::gpu::sequence_param;
use crate::gpu_decode::{dtype_of, gamma_set};

/// The parallel spec for this problem on `arch` when the catalog's generator serves the
/// (K, V, dtype), with the catalog's tile for the dtype.
pub(crate) fn parallel_spec<T: Element>(
    arch: kernel_gen::Arch,
    gammas: &Gammas,
    shape: &RetentionShape,
) -> Result<KernelSpec> {
    let dtype = dtype_of::<T>()?;
    let spec = KernelSpec::parallel_default(
        shape.dk as u32,
        shape.dv as u32,
        gamma_set(gammas),
        dtype,
        arch,
    );
    spec.validate().map_err(RetentionError::from)?;
    Ok(spec)
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
