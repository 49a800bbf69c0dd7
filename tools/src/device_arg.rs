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
