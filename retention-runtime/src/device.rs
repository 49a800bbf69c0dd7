//! Where retention runs.

use std::fmt;

use retention_core::{Result, RetentionError};

use kernel_gen::Arch;

use crate::cuda;

/// A compute device. Every device offers the same operations through the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Device {
    /// The host CPU (`retention-kernels`' CPU kernels).
    Cpu,
    /// An NVIDIA GPU by ordinal, through `cudarc` with the driver loaded at run time.
    Cuda(usize),
    /// The PTX emulator standing in for a GPU of this architecture: the very PTX, module
    /// cache and launches a GPU gets, executed on the CPU (tests, and machines without GPUs).
    Emulated(Arch),
}

impl Device {
    /// The best device on this machine: CUDA device 0 when `libcuda` is present and a GPU
    /// answers, else the CPU. Never panics on a machine without CUDA.
    pub fn best() -> Self {
        Self::cuda(0).unwrap_or(Device::Cpu)
    }

    /// CUDA device `ordinal`, checked to exist.
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] when there is no driver, no GPU, or no such ordinal.
    pub fn cuda(ordinal: usize) -> Result<Self> {
        cuda::CudaBackend::new(ordinal).map(|_| Device::Cuda(ordinal))
    }

    /// Parse a device name: `cpu`, `cuda` (ordinal 0), `cuda:N`, `emulated` (sm_80) or
    /// `emulated:sm_80|sm_90`; CUDA devices are checked to exist.
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] for an unknown name or a device that is not there.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Self::cuda(0),
            "emulated" => Ok(Device::Emulated(Arch::Sm80)),
            other => {
                if let Some(Ok(ordinal)) = other.strip_prefix("cuda:").map(str::parse::<usize>) {
                    return Self::cuda(ordinal);
                }
                if let Some(Ok(arch)) = other.strip_prefix("emulated:").map(str::parse::<Arch>) {
                    return Ok(Device::Emulated(arch));
                }
                Err(RetentionError::NoDevice(format!(
                    "unknown device `{other}` (expected cpu, cuda, cuda:N, emulated or \
                     emulated:sm_80|sm_90)"
                )))
            }
        }
    }

    /// A short name for reports and cache keys.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(ordinal) => format!("cuda:{ordinal}"),
            Device::Emulated(arch) => format!("emulated:{arch}"),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_missing_gpus_are_errors() {
        assert_eq!(Device::from_name("cpu").unwrap(), Device::Cpu);
        assert!(matches!(
            Device::from_name("tpu"),
            Err(RetentionError::NoDevice(_))
        ));
        assert!(matches!(
            Device::from_name("cuda:x"),
            Err(RetentionError::NoDevice(_))
        ));
        if cuda::device_count() == 0 {
            assert_eq!(Device::best(), Device::Cpu);
            assert!(matches!(
                Device::from_name("cuda"),
                Err(RetentionError::NoDevice(_))
            ));
            assert!(matches!(Device::cuda(0), Err(RetentionError::NoDevice(_))));
        } else {
            assert_eq!(Device::best(), Device::Cuda(0));
            assert_eq!(Device::from_name("cuda:0").unwrap().name(), "cuda:0");
        }
    }
}
