//! Host-buffer launch descriptions for kernel timing ([`crate::kernel_timing`], which
//! `retention bench` and `retention autotune` use): the emulator's `Launch` with seeded host
//! inputs. The public ops never build these; they use [`crate::kernel_launch`].

use kernel_gen::KernelSpec;
use kernel_gen::emu::{Buffer, Param};
use retention_core::{Element, Gammas, HostTensor, RetentionShape};

use crate::gpu_decode::emu_dtype;

/// The value of a parameter the sequence kernels (chunkwise, its phases, parallel) all take
/// the same way — q, k, v, a zeroed o, T, the scale and the runtime-γ pair — or `None` for
/// one the caller fills itself.
pub(crate) fn sequence_param<T: Element>(
    name: &str,
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
) -> Option<Param> {
    let s = shape;
    let bytes = |t: &HostTensor<T>| Buffer {
        bytes: t.as_bytes().to_vec(),
        dtype: emu_dtype(spec.dtype),
        output: false,
    };
    Some(match name {
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
        _ => return None,
    })
}
