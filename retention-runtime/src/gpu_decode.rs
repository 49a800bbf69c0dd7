//! The decode kernel's host-buffer launch description, for kernel timing
//! ([`crate::kernel_timing`]); the public decode step launches through
//! [`crate::device_launch`].

use kernel_gen::emu::{Buffer, Launch, Param};
use kernel_gen::{Arch, GammaSet, KernelSpec, decode_variant, launch_geometry};
use retention_core::{Dtype, Element, Gammas, HostTensor, Result, RetentionError, validate_scale};

/// The emulator's element type of `dtype`.
pub(crate) fn emu_dtype(dtype: Dtype) -> kernel_gen::emu::Dtype {
    match dtype {
        Dtype::F32 => kernel_gen::emu::Dtype::F32,
        Dtype::F16 => kernel_gen::emu::Dtype::F16,
        Dtype::Bf16 => kernel_gen::emu::Dtype::Bf16,
    }
}

/// The decode spec serving these decays for `rows` rows of `heads` heads: baked immediates for an unsharded
/// RetNet schedule, the runtime-γ variant for anything else (sharded heads, explicit
/// lists), with the value slice the plan picks for the batch ([`decode_variant`]).
pub(crate) fn decode_spec(
    gammas: &Gammas,
    (rows, heads, dk, dv): (usize, usize, usize, usize),
    dtype: Dtype,
    arch: Arch,
) -> KernelSpec {
    let base = KernelSpec::decode(dk as u32, dv as u32, gamma_set(gammas), dtype, arch);
    decode_variant(&base, rows as u32, heads as u32)
}

pub(crate) use crate::device_launch::gamma_set;

pub(crate) fn dtype_of<T: Element>() -> Result<Dtype> {
    T::DTYPE.ok_or_else(|| RetentionError::Unsupported {
        what: "dtype".into(),
        value: "f64".into(),
        reason: "device kernels take f32, f16 or bf16".into(),
    })
}

fn buffer<T: Element>(t: &HostTensor<T>, dtype: Dtype) -> Buffer {
    Buffer {
        bytes: t.as_bytes().to_vec(),
        dtype: emu_dtype(dtype),
        output: false,
    }
}

/// What one emulated decode step needs besides the tensors.
pub(crate) struct DecodeProblem<'a> {
    pub arch: Arch,
    pub gammas: &'a Gammas,
    pub scale: Option<f64>,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
}

/// The spec and launch description of one decode step (argument 3, the state pool, is a
/// placeholder for the caller to bind).
pub(crate) fn decode_launch<T: Element>(
    p: &DecodeProblem<'_>,
    rows: &[u32],
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
) -> Result<(KernelSpec, Launch)> {
    let dtype = dtype_of::<T>()?;
    let n = rows.len();
    let spec = decode_spec(p.gammas, (n, p.heads, p.dk, p.dv), dtype, p.arch);
    let geometry =
        launch_geometry(&spec, n as u32, p.heads as u32).map_err(RetentionError::from)?;
    let scale = validate_scale(p.scale, p.dk)? as f32;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes)
        .arg(Param::Buffer(buffer(q, dtype)))
        .arg(Param::Buffer(buffer(k, dtype)))
        .arg(Param::Buffer(buffer(v, dtype)))
        // The state pool: bound by `Gpu::run` to host or device memory.
        .arg(Param::U64(0))
        .arg(Param::Buffer(Buffer::from_u32(rows)))
        .arg(Param::Buffer(
            Buffer::zeros(emu_dtype(dtype), n * p.heads * p.dv).output(),
        ))
        .arg(Param::U32(n as u32))
        .arg(Param::F32(scale));
    if spec.gammas == GammaSet::Runtime {
        let log2g: Vec<f32> = (0..p.heads).map(|h| p.gammas.log2(h) as f32).collect();
        launch = launch
            .arg(Param::U32(p.heads as u32))
            .arg(Param::Buffer(Buffer::from_f32(&log2g)));
    }
    Ok((spec, launch))
}
