//! A loaded PTX module and the kernels (entries) taken from it.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use retention_core::{Result, RetentionError};

use super::error::kernel_error;
use super::signature::{EntrySignature, ParamType};

/// A PTX module loaded into one device. Kernels taken from it keep it loaded.
#[derive(Debug, Clone)]
pub struct Module {
    inner: Arc<CudaModule>,
    ctx: Arc<CudaContext>,
    ordinal: usize,
    entries: Vec<EntrySignature>,
}

impl Module {
    pub(super) fn new(
        inner: Arc<CudaModule>,
        ctx: Arc<CudaContext>,
        entries: Vec<EntrySignature>,
    ) -> Self {
        let ordinal = ctx.ordinal();
        Self {
            inner,
            ctx,
            ordinal,
            entries,
        }
    }

    /// The names of the module's `.entry` kernels, in declaration order.
    pub fn entry_names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The kernel named `entry`.
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] when the module declares no such entry or the driver
    /// cannot find it.
    pub fn kernel(&self, entry: &str) -> Result<Kernel> {
        let Some(signature) = self.entries.iter().find(|e| e.name == entry) else {
            let known: Vec<&str> = self.entry_names().collect();
            return Err(RetentionError::KernelLoad(format!(
                "CUDA device {}: the module has no entry `{entry}` (it has {known:?})",
                self.ordinal
            )));
        };
        // The name came out of NUL-free module text, so cudarc's C-string conversion holds.
        let func = self
            .inner
            .load_function(&signature.name)
            .map_err(|e| kernel_error(self.ordinal, &format!("finding entry `{entry}`"), e))?;
        Ok(Kernel {
            func,
            entry: signature.name.clone(),
            params: signature.params.clone(),
            ctx: self.ctx.clone(),
        })
    }
}

/// One kernel entry, ready to launch with [`Stream::launch`](super::Stream::launch).
#[derive(Debug, Clone)]
pub struct Kernel {
    pub(super) func: CudaFunction,
    entry: String,
    params: Vec<ParamType>,
    pub(super) ctx: Arc<CudaContext>,
}

impl Kernel {
    /// The entry name.
    pub fn entry(&self) -> &str {
        &self.entry
    }

    /// The declared parameter types, in order; launches are checked against them.
    pub fn params(&self) -> &[ParamType] {
        &self.params
    }

    /// The ordinal of the device the kernel is loaded on.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }
}
