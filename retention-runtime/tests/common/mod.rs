//! What the runtime's device tests share.

use kernel_gen::Arch;
use retention_runtime::Device;

/// Every device this machine has: `Cpu`, `Emulated(sm_80)`, `Emulated(sm_90)`, and `Cuda(0)`
/// where a GPU answers.
pub fn devices() -> Vec<Device> {
    let mut all = vec![
        Device::Cpu,
        Device::Emulated(Arch::Sm80),
        Device::Emulated(Arch::Sm90),
    ];
    match Device::cuda(0) {
        Ok(gpu) => all.push(gpu),
        Err(e) => eprintln!("no CUDA device here, so no CUDA run: {e}"),
    }
    all
}
