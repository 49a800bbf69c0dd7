//! The chunkwise forward on `Device::Emulated`: the catalog's chunkwise kernel (tensor cores
//! for f16/bf16, FMA for f32), loaded through the module cache and run by the PTX emulator
//! with the argument list its spec names.

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Param};
use kernel_gen::{Arch, KernelSpec, launch_geometry, param_names};
use retention_core::{Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::catalog_check::io::emu_dtype;
use crate::emulated_decode::gamma_set;
use crate::module_cache::ModuleCache;

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

/// Run `spec` over q, k `[B,T,H,K]`, v `[B,T,H,V]` with optional `h0` `[B,H,K,V]`.
/// Returns (o `[B,T,H,V]`, H_T `[B,H,K,V]`).
pub(crate) fn chunkwise<T: Element>(
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
    h0: Option<&HostTensor<f32>>,
) -> Result<(HostTensor<T>, HostTensor<f32>)> {
    let module = ModuleCache::global().get(spec)?;
    let s = shape;
    let geometry =
        launch_geometry(spec, s.batch as u32, s.heads as u32).map_err(RetentionError::from)?;
    let bytes = |t: &HostTensor<T>| Buffer {
        bytes: t.as_bytes().to_vec(),
        dtype: emu_dtype(spec.dtype),
        output: false,
    };
    let names = param_names(spec);
    let mut launch = Launch::new(module.entry.clone(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in &names {
        launch = launch.arg(match *name {
            "p_q" => Param::Buffer(bytes(q)),
            "p_k" => Param::Buffer(bytes(k)),
            "p_v" => Param::Buffer(bytes(v)),
            "p_o" => Param::Buffer(
                Buffer::zeros(emu_dtype(spec.dtype), s.batch * s.seq_len * s.heads * s.dv).output(),
            ),
            "p_h0" => match h0 {
                Some(h) => Param::Buffer(Buffer::from_f32(h.data())),
                None => Param::U64(0),
            },
            "p_ht" => Param::Buffer(
                Buffer::zeros(EmuDtype::F32, s.batch * s.heads * s.dk * s.dv).output(),
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
                    module.entry
                )));
            }
        });
    }
    module
        .emulated
        .launch(&mut launch)
        .map_err(|e| RetentionError::KernelLoad(format!("{}: {e}", module.entry)))?;
    let at = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| launch.buffer(i))
    };
    let o = at("p_o").ok_or_else(|| RetentionError::KernelLoad("no output buffer".into()))?;
    let values: Vec<T> = crate::emulated_decode::widen(spec.dtype, o);
    let ht = at("p_ht")
        .ok_or_else(|| RetentionError::KernelLoad("no final-state buffer".into()))?
        .to_f32();
    Ok((
        HostTensor::new(s.vo_shape(), values)?,
        HostTensor::new(s.state_shape(s.batch), ht)?,
    ))
}
