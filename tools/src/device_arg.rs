//! `--device cpu|cuda|emulated` for `bench` and `autotune`: which device a measurement runs
//! on, and a one-line error where this build cannot measure.

use clap::ValueEnum;
use retention_runtime::Device;

use crate::error::CliError;

/// A device to measure on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The host CPU (the fast CPU kernels).
    Cpu,
    /// CUDA device 0: catalog kernels timed with device events.
    Cuda,
    /// The PTX emulator standing in for an A100 (sm_80): catalog kernels with *predicted*
    /// times from one emulated launch each.
    Emulated,
}

impl DeviceArg {
    /// The runtime device, checked to exist.
    ///
    /// # Errors
    /// [`CliError::Retention`] (`NoDevice`) when CUDA has no device here.
    pub fn open(self) -> Result<Device, CliError> {
        Ok(match self {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::from_name("cuda")?,
            DeviceArg::Emulated => Device::Emulated(kernel_gen::Arch::Sm80),
        })
    }
}

/// The CPU, or a one-line error saying why `device` cannot run `what` here: no CUDA device
/// (the runtime's reason), or measuring there is not built yet.
///
/// # Errors
/// [`CliError::Retention`] (`NoDevice`) or [`CliError::NotSupported`].
pub fn require_cpu(device: DeviceArg, what: &str) -> Result<Device, CliError> {
    match device {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            let gpu = Device::from_name("cuda")?;
            Err(CliError::NotSupported {
                what: format!("{what} on {gpu}"),
                hint: String::new(),
            })
        }
        DeviceArg::Emulated => Err(CliError::NotSupported {
            what: format!("{what} on the emulated device"),
            hint: "; `retention verify` reports the emulator's predicted GPU times".into(),
        }),
    }
}
