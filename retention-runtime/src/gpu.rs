//! The GPU-like devices behind one type: the PTX emulator and a CUDA device run the same
//! launch descriptions ([`crate::launch_target`]); this adds where recurrent state lives
//! (host memory for the emulator, device memory on a GPU) so ops can be written once.

use kernel_gen::emu::{Buffer, Launch, Param};
use kernel_gen::{Arch, KernelSpec, param_names};
use retention_core::{Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::catalog_check::io::emu_dtype;

use crate::cuda::DeviceBuffer;
use crate::cuda_target::CudaTarget;
use crate::device::Device;
use crate::launch_target::{Emulator, LaunchReport, LaunchTarget};

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

    /// Runs `launch` with the f32 buffers of `states` bound to their parameter indices:
    /// host slices travel in the description (and are copied back), device buffers stay
    /// where they are.
    pub(crate) fn run(
        &self,
        spec: &KernelSpec,
        launch: &mut Launch,
        states: Vec<(usize, StateRef<'_>)>,
    ) -> Result<LaunchReport> {
        let mut host = Vec::new();
        let mut device = Vec::new();
        for (i, state) in states {
            match state {
                StateRef::Host(s) => {
                    let slot = launch.params.get_mut(i).ok_or_else(|| bad_index(spec, i))?;
                    *slot = Param::Buffer(Buffer::from_f32(s).output());
                    host.push((i, s));
                }
                StateRef::Device(b) => {
                    let slot = launch.params.get_mut(i).ok_or_else(|| bad_index(spec, i))?;
                    *slot = Param::U64(0);
                    device.push((i, b));
                }
            }
        }
        let report = match self {
            Gpu::Emulated(e) if device.is_empty() => e.execute(spec, launch)?,
            Gpu::Emulated(_) => {
                return Err(RetentionError::Unsupported {
                    what: "device-resident state".into(),
                    value: "emulated device".into(),
                    reason: "the emulator keeps state in host memory".into(),
                });
            }
            Gpu::Cuda(c) => c.execute_resident(spec, launch, device)?,
        };
        for (i, s) in host {
            let out = launch.buffer(i).ok_or_else(|| bad_index(spec, i))?.to_f32();
            s.copy_from_slice(&out);
        }
        Ok(report)
    }
}

/// Where one f32 state argument lives.
pub(crate) enum StateRef<'a> {
    /// Host memory (the emulator, or a GPU run that uploads and downloads it).
    Host(&'a mut [f32]),
    /// Device memory on the CUDA device running the launch.
    Device(&'a mut DeviceBuffer<f32>),
}

fn bad_index(spec: &KernelSpec, i: usize) -> RetentionError {
    RetentionError::KernelLoad(format!("{}: no argument {i}", spec.entry()))
}

/// Where parameter `name` sits in `spec`'s entry.
///
/// # Errors
/// [`RetentionError::KernelLoad`] when the entry has no such parameter.
pub(crate) fn param_index(spec: &KernelSpec, name: &str) -> Result<usize> {
    param_names(spec)
        .iter()
        .position(|n| *n == name)
        .ok_or_else(|| RetentionError::KernelLoad(format!("{}: no `{name}`", spec.entry())))
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
