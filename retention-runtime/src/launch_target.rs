//! Where a kernel launch runs. A launch is described once, device-neutrally, as the
//! emulator's [`Launch`] (entry, grid, block, dynamic shared memory, arguments in `.param`
//! order with host copies of every buffer); a [`LaunchTarget`] executes it and writes what
//! the kernel stored back into the launch's output buffers. The emulator and a real GPU
//! therefore run the very same launch description — argument filling by parameter name,
//! geometry, buffer sizes — and only the executor differs.

use kernel_gen::emu::{self, EmuReport, Launch};
use kernel_gen::{Arch, KernelSpec};
use retention_core::{Result, RetentionError};

use crate::cuda_target::CudaTarget;
use crate::device::Device;
use crate::module_cache::ModuleCache;

/// What an executed launch reports about itself.
#[derive(Debug, Clone)]
pub enum LaunchReport {
    /// The emulator's counters and *predicted* A100/H100 times.
    Emulated(Box<EmuReport>),
    /// A real GPU: kernel time measured with device events around the launch.
    Measured {
        /// GPU seconds between the events before and after the launch.
        seconds: f64,
    },
}

impl LaunchReport {
    /// The emulator report, when the launch was emulated.
    pub fn emulated(&self) -> Option<&EmuReport> {
        match self {
            LaunchReport::Emulated(r) => Some(r),
            LaunchReport::Measured { .. } => None,
        }
    }

    /// Seconds for the launch: measured on a GPU, or the emulator's prediction for `arch`
    /// (labelled by [`LaunchReport::is_predicted`]).
    pub fn seconds(&self, arch: Arch) -> f64 {
        match self {
            LaunchReport::Emulated(r) => match arch {
                Arch::Sm80 => r.predicted_a100_seconds,
                Arch::Sm90 => r.predicted_h100_seconds,
            },
            LaunchReport::Measured { seconds } => *seconds,
        }
    }

    /// True when [`LaunchReport::seconds`] is a model's prediction, not a measurement.
    pub fn is_predicted(&self) -> bool {
        matches!(self, LaunchReport::Emulated(_))
    }
}

/// Something that executes a described kernel launch.
pub trait LaunchTarget {
    /// Runs `launch`, an entry of `spec`'s module, and writes every output buffer's final
    /// contents back into `launch`.
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] when the module or launch is refused or the emulator
    /// finds a fault (out of bounds, race, …); [`RetentionError::DeviceFailure`] when a GPU
    /// fails; [`RetentionError::OutOfMemory`] when its buffers do not fit.
    fn execute(&self, spec: &KernelSpec, launch: &mut Launch) -> Result<LaunchReport>;

    /// The architecture whose PTX this target runs.
    fn arch(&self) -> Arch;
}

/// An already-parsed emulator module runs launches of its own entries; a launch of another
/// spec's entry (the partner phase of a two-phase check, say) runs that spec's module from the
/// [`ModuleCache`] on the emulator. The arch reported is sm_80; launches use the spec's own.
impl LaunchTarget for emu::Module {
    fn execute(&self, spec: &KernelSpec, launch: &mut Launch) -> Result<LaunchReport> {
        if !self.entries().contains(&launch.entry.as_str()) {
            return Emulator(spec.arch).execute(spec, launch);
        }
        self.launch(launch)
            .map(|r| LaunchReport::Emulated(Box::new(r)))
            .map_err(|e| RetentionError::KernelLoad(format!("{}: {e}", spec.entry())))
    }

    fn arch(&self) -> Arch {
        Arch::Sm80
    }
}

/// The PTX emulator standing in for a GPU of one architecture; modules come from the
/// process-wide [`ModuleCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emulator(pub Arch);

impl LaunchTarget for Emulator {
    fn execute(&self, spec: &KernelSpec, launch: &mut Launch) -> Result<LaunchReport> {
        let module = ModuleCache::global().get(spec)?;
        module.emulated.execute(spec, launch)
    }

    fn arch(&self) -> Arch {
        self.0
    }
}

/// The launch target of a GPU-like device: the emulator or a CUDA device; `None` for the CPU.
///
/// # Errors
/// [`RetentionError::NoDevice`] when a CUDA device cannot be opened;
/// [`RetentionError::Unsupported`] for a GPU older than sm_80.
pub fn target_for(device: &Device) -> Result<Option<Box<dyn LaunchTarget + Send + Sync>>> {
    Ok(match device {
        Device::Cpu => None,
        Device::Emulated(arch) => Some(Box::new(Emulator(*arch))),
        Device::Cuda(ordinal) => Some(Box::new(CudaTarget::open(*ordinal)?)),
    })
}
