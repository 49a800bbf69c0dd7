//! Where retention runs.

use std::fmt;

/// A compute device. Every device offers the same operations through the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Device {
    /// The host CPU (`retention-kernels`' CPU kernels).
    Cpu,
}

impl Device {
    /// The best device on this machine. CUDA devices join when the runtime's CUDA backend
    /// lands; until then this is always the CPU, and it never panics on a machine without
    /// CUDA.
    pub fn best() -> Self {
        Device::Cpu
    }

    /// A short name for reports and cache keys.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
