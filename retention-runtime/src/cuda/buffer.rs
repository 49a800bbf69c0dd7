//! Typed device memory. The device address stays inside; kernels see it only through
//! [`KernelArg`](super::KernelArg).

use cudarc::driver::{
    CudaContext, CudaSlice, DeviceRepr, LaunchArgs, PushKernelArg, ValidAsZeroBits,
};

mod sealed {
    pub trait Sealed {}
}

/// An element type a [`DeviceBuffer`] can hold: plain data whose all-zero bit pattern is a
/// valid value. 16-bit floats travel as `u16` bit patterns (`bytemuck::cast_slice`).
pub trait DeviceElement:
    DeviceRepr + ValidAsZeroBits + Copy + Default + Send + Sync + 'static + sealed::Sealed
{
}

macro_rules! device_elements {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl DeviceElement for $t {}
    )*};
}
device_elements!(u8, u16, u32, u64, i32, i64, f32, f64);

/// `len` elements of `T` in device memory, freed (in stream order) when dropped.
#[derive(Debug)]
pub struct DeviceBuffer<T> {
    pub(super) slice: CudaSlice<T>,
}

impl<T: DeviceElement> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.slice.len()
    }

    /// Always false: zero-length buffers are refused at allocation.
    pub fn is_empty(&self) -> bool {
        self.slice.is_empty()
    }

    /// Size in bytes.
    pub fn num_bytes(&self) -> usize {
        self.slice.num_bytes()
    }

    /// The ordinal of the device holding this buffer.
    pub fn ordinal(&self) -> usize {
        self.slice.ordinal()
    }
}

/// What a launch needs from any buffer, whatever its element type.
pub(super) trait BufferArg {
    /// Pushes the device address as an argument the kernel only reads: the launch waits for
    /// pending writes on other streams.
    fn push_read<'s>(&'s self, builder: &mut LaunchArgs<'s>);
    /// Pushes the device address as an argument the kernel may write: the launch waits for
    /// pending reads and writes on other streams.
    fn push_write<'s>(&'s mut self, builder: &mut LaunchArgs<'s>);
    /// The context the memory belongs to.
    fn context(&self) -> &std::sync::Arc<CudaContext>;
}

impl<T: DeviceElement> BufferArg for DeviceBuffer<T> {
    fn push_read<'s>(&'s self, builder: &mut LaunchArgs<'s>) {
        builder.arg(&self.slice);
    }

    fn push_write<'s>(&'s mut self, builder: &mut LaunchArgs<'s>) {
        builder.arg(&mut self.slice);
    }

    fn context(&self) -> &std::sync::Arc<CudaContext> {
        self.slice.context()
    }
}
