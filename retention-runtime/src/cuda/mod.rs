//! The CUDA backend: one GPU through the driver API (`cudarc`, loaded at run time).
//!
//! Nothing here links against CUDA. `libcuda` is opened on first use, and every entry point
//! first asks whether it exists, so a machine without a driver gets
//! [`RetentionError::NoDevice`](retention_core::RetentionError::NoDevice) and never a panic.
//!
//! The shape of a GPU run: [`CudaBackend::new`] → [`CudaBackend::load_module`] (PTX text from
//! `kernel-gen`) → [`Module::kernel`] → buffers on a [`Stream`] → [`Stream::launch`] with an
//! ordered [`KernelArg`] list checked against the entry's declared parameters → download.
//! Device addresses leave this module only as plain `u64`s that the runtime binds into
//! launch descriptions ([`DeviceBuffer::address`]); the address-based copies are `unsafe`.

mod backend;
mod buffer;
mod error;
mod event;
mod foreign_stream;
mod launch;
mod module;
mod probe;
mod raw;
mod signature;
mod stream;

#[cfg(test)]
mod tests;

pub use backend::CudaBackend;
pub use buffer::{DeviceBuffer, DeviceElement};
pub use event::Event;
pub use launch::{KernelArg, LaunchDims};
pub use module::{Kernel, Module};
pub use probe::{device_count, driver_present};
pub use raw::Graph;
pub use signature::ParamType;
pub use stream::Stream;
