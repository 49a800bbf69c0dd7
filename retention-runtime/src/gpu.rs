//! The GPU-like devices behind one type for kernel timing ([`crate::kernel_timing`]), which
//! still builds the emulator's host-buffer launches; the public ops use
//! [`crate::kernel_launch`] instead.

use kernel_gen::emu::{Buffer, Param};
use kernel_gen::{Arch, KernelSpec};
use retention_core::{Element, Gammas, HostTensor, Result, RetentionShape};

use crate::gpu_decode::emu_dtype;

use crate::cuda_target::CudaTarget;
use crate::device::Device;
use crate::launch_target::{Emulator, LaunchTarget};

/// A device that runs catalog PTX.
#[derive(Debug, Clone)]
pub(crate) enum Gpu {
    /// The emulator standing in for a GPU of this arch.
    Emulated(Emulator),
    /// A real CUDA device.
    Cuda(CudaTarget),
}

impl Gpu {
    /// The GPU-like device behind `device`; `None` for the CPU.
    ///
    /// # Errors
    /// As [`CudaTarget::open`].
    pub(crate) fn of(device: &Device) -> Result<Option<Gpu>> {
        Ok(match device {
            Device::Cpu => None,
            Device::Emulated(arch) => Some(Gpu::Emulated(Emulator(*arch))),
            Device::Cuda(ordinal) => Some(Gpu::Cuda(CudaTarget::open(*ordinal)?)),
        })
    }

    /// The architecture whose PTX runs here.
    pub(crate) fn arch(&self) -> Arch {
        match self {
            Gpu::Emulated(e) => e.arch(),
            Gpu::Cuda(c) => c.arch(),
        }
    }
}

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
