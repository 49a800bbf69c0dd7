//! The chunkwise forward on a GPU-like device: the catalog's chunkwise kernel (tensor cores
//! for f16/bf16, FMA for f32) with the argument list its spec names, run by the emulator or a
//! CUDA device.

use kernel_gen::emu::{Buffer, Launch, Param};
use kernel_gen::{Arch, KernelSpec, launch_geometry, param_names};
use retention_core::{Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::catalog_check::io::emu_dtype;
use crate::gpu::{Gpu, StateRef};
use crate::gpu_decode::gamma_set;

/// The chunkwise spec for this problem, when the catalog's generator serves it (K, V, chunk
/// and dtype it was built for); `None` otherwise.
pub(crate) fn chunkwise_spec(
    gammas: &Gammas,
    shape: &RetentionShape,
    chunk: usize,
    dtype: Dtype,
    arch: Arch,
) -> Option<KernelSpec> {
    let chunk = u32::try_from(chunk).ok()?;
    let spec = KernelSpec::chunkwise(
        shape.dk as u32,
        shape.dv as u32,
        chunk,
        gamma_set(gammas),
        dtype,
        arch,
    );
    spec.validate().ok().map(|()| spec)
}

/// Run `spec` on `gpu` over q, k `[B,T,H,K]`, v `[B,T,H,V]` with optional `h0` `[B,H,K,V]`
/// f32, writing H_T `[B,H,K,V]` into `ht`. Returns o `[B,T,H,V]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunkwise<T: Element>(
    gpu: &Gpu,
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
    h0: Option<StateRef<'_>>,
    ht: StateRef<'_>,
) -> Result<HostTensor<T>> {
    let mut launch = chunkwise_launch(spec, shape, gammas, scale, (q, k, v))?;
    let names = param_names(spec);
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| RetentionError::KernelLoad(format!("{}: no `{name}`", spec.entry())))
    };
    let mut states = vec![(at("p_ht")?, ht)];
    if let Some(h0) = h0 {
        states.push((at("p_h0")?, h0));
    }
    gpu.run(spec, &mut launch, states)?;
    let o = launch
        .buffer(at("p_o")?)
        .ok_or_else(|| RetentionError::KernelLoad("no output buffer".into()))?;
    let values: Vec<T> = crate::gpu_decode::widen(spec.dtype, o);
    HostTensor::new(shape.vo_shape(), values)
}

/// The launch description of `spec` over q, k, v; `p_h0` and `p_ht` are null placeholders
/// for the caller to bind (a null H0 means zero).
pub(crate) fn chunkwise_launch<T: Element>(
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
) -> Result<Launch> {
    let s = shape;
    let geometry =
        launch_geometry(spec, s.batch as u32, s.heads as u32).map_err(RetentionError::from)?;
    let bytes = |t: &HostTensor<T>| Buffer {
        bytes: t.as_bytes().to_vec(),
        dtype: emu_dtype(spec.dtype),
        output: false,
    };
    let names = param_names(spec);
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in &names {
        launch = launch.arg(match *name {
            "p_q" => Param::Buffer(bytes(q)),
            "p_k" => Param::Buffer(bytes(k)),
            "p_v" => Param::Buffer(bytes(v)),
            "p_o" => Param::Buffer(
                Buffer::zeros(emu_dtype(spec.dtype), s.batch * s.seq_len * s.heads * s.dv).output(),
            ),
            // Bound by `Gpu::run` (a null H0 when there is none).
            "p_h0" | "p_ht" => Param::U64(0),
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
