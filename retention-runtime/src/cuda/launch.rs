//! Launch geometry and kernel arguments.

use super::buffer::{BufferArg, DeviceBuffer, DeviceElement};
use super::signature::ParamType;

/// Grid and block shape and the dynamic shared memory of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    /// Blocks in x, y, z.
    pub grid: (u32, u32, u32),
    /// Threads per block in x, y, z.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes (on top of the kernel's static `.shared`).
    pub shared_bytes: u32,
}

impl LaunchDims {
    /// A one-dimensional launch: `grid` blocks of `block` threads, no dynamic shared memory.
    pub fn linear(grid: u32, block: u32) -> Self {
        Self {
            grid: (grid, 1, 1),
            block: (block, 1, 1),
            shared_bytes: 0,
        }
    }

    /// The same launch with `bytes` of dynamic shared memory per block.
    pub fn with_shared_bytes(self, bytes: u32) -> Self {
        Self {
            shared_bytes: bytes,
            ..self
        }
    }

    /// True when every extent is at least 1 (the driver rejects a zero extent).
    pub(super) fn is_nonempty(&self) -> bool {
        let (gx, gy, gz) = self.grid;
        let (bx, by, bz) = self.block;
        [gx, gy, gz, bx, by, bz].iter().all(|&d| d > 0)
    }
}

/// One kernel argument, in the order of the entry's `.param` list. Buffers go in as their
/// 64-bit device address; whether the kernel reads or writes a buffer decides how launches
/// on different streams are ordered around it.
pub struct KernelArg<'a>(pub(super) ArgValue<'a>);

pub(super) enum ArgValue<'a> {
    Read(&'a dyn BufferArg),
    Write(&'a mut dyn BufferArg),
    U32(u32),
    F32(f32),
    U64(u64),
}

impl<'a> KernelArg<'a> {
    /// A buffer the kernel only reads (a `.u64` pointer parameter).
    pub fn input<T: DeviceElement>(buffer: &'a DeviceBuffer<T>) -> Self {
        Self(ArgValue::Read(buffer))
    }

    /// A buffer the kernel writes, or reads and writes (a `.u64` pointer parameter).
    pub fn output<T: DeviceElement>(buffer: &'a mut DeviceBuffer<T>) -> Self {
        Self(ArgValue::Write(buffer))
    }

    /// A 32-bit integer scalar (`.u32`, `.s32` or `.b32` parameter).
    pub fn u32(value: u32) -> Self {
        Self(ArgValue::U32(value))
    }

    /// A 32-bit float scalar (`.f32` or `.b32` parameter).
    pub fn f32(value: f32) -> Self {
        Self(ArgValue::F32(value))
    }

    /// A 64-bit integer scalar (`.u64`, `.s64` or `.b64` parameter).
    pub fn u64(value: u64) -> Self {
        Self(ArgValue::U64(value))
    }

    /// The buffer this argument passes, if it is one.
    pub(super) fn buffer(&self) -> Option<&dyn BufferArg> {
        match &self.0 {
            ArgValue::Read(buffer) => Some(*buffer),
            ArgValue::Write(buffer) => Some(&**buffer),
            ArgValue::U32(_) | ArgValue::F32(_) | ArgValue::U64(_) => None,
        }
    }

    /// How this argument reads in an error message.
    pub(super) fn describe(&self) -> &'static str {
        match self.0 {
            ArgValue::Read(_) => "input buffer (.u64 address)",
            ArgValue::Write(_) => "output buffer (.u64 address)",
            ArgValue::U32(_) => "u32",
            ArgValue::F32(_) => "f32",
            ArgValue::U64(_) => "u64",
        }
    }

    /// Whether a parameter declared as `param` takes this argument bit for bit.
    pub(super) fn fits(&self, param: &ParamType) -> bool {
        use ParamType as P;
        match self.0 {
            ArgValue::Read(_) | ArgValue::Write(_) | ArgValue::U64(_) => {
                matches!(param, P::U64 | P::S64 | P::B64)
            }
            ArgValue::U32(_) => matches!(param, P::U32 | P::S32 | P::B32),
            ArgValue::F32(_) => matches!(param, P::F32 | P::B32),
        }
    }
}

impl std::fmt::Debug for KernelArg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ArgValue::U32(v) => write!(f, "u32({v})"),
            ArgValue::F32(v) => write!(f, "f32({v})"),
            ArgValue::U64(v) => write!(f, "u64({v})"),
            ArgValue::Read(_) | ArgValue::Write(_) => f.write_str(self.describe()),
        }
    }
}
