//! The parallel form on a GPU-like device: the catalog's flash-style parallel kernel (query
//! tiles against the key tiles at or before them, the decay mask computed on the fly, no T×T
//! matrix in memory), its arguments filled by parameter name.

use kernel_gen::emu::{Buffer, Launch, Param};
use kernel_gen::kernels::parallel::{default_tile, launch_geometry_for_len};
use kernel_gen::{KernelSpec, param_names};
use retention_core::{Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::catalog_check::io::emu_dtype;
use crate::gpu::Gpu;
use crate::gpu_decode::{dtype_of, gamma_set, widen};

/// The parallel spec for this problem on `gpu` when the catalog's generator serves the
/// (K, V, dtype), with the catalog's tile for the dtype.
pub(crate) fn parallel_spec<T: Element>(
    gpu: &Gpu,
    gammas: &Gammas,
    shape: &RetentionShape,
) -> Result<KernelSpec> {
    let dtype = dtype_of::<T>()?;
    let spec = KernelSpec::parallel(
        shape.dk as u32,
        shape.dv as u32,
        default_tile(dtype),
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
    let at = param_names(spec)
        .iter()
        .position(|n| *n == "p_o")
        .ok_or_else(|| RetentionError::KernelLoad(format!("{}: no `p_o`", spec.entry())))?;
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
    let geometry = launch_geometry_for_len(spec, s.batch as u32, s.heads as u32, s.seq_len as u32)
        .map_err(RetentionError::from)?;
    let bytes = |t: &HostTensor<T>| Buffer {
        bytes: t.as_bytes().to_vec(),
        dtype: emu_dtype(spec.dtype),
        output: false,
    };
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in param_names(spec) {
        launch = launch.arg(match name {
            "p_q" => Param::Buffer(bytes(q)),
            "p_k" => Param::Buffer(bytes(k)),
            "p_v" => Param::Buffer(bytes(v)),
            "p_o" => Param::Buffer(
                Buffer::zeros(emu_dtype(spec.dtype), s.batch * s.seq_len * s.heads * s.dv).output(),
            ),
            "p_t" => Param::U32(s.seq_len as u32),
            "p_scale" => Param::F32(scale),
            "p_heads" => Param::U32(s.heads as u32),
            "p_log2_gamma" => Param::Buffer(Buffer::from_f32(
                &(0..s.heads)
                    .map(|h| gammas.log2(h) as f32)
                    .collect::<Vec<_>>(),
            )),
            other => {
                return Err(RetentionError::KernelLoad(format!(
                    "{}: the runtime cannot fill parameter `{other}`",
                    spec.entry()
                )));
            }
        });
    }
    Ok(launch)
}
