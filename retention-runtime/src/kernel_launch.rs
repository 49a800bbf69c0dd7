//! The runtime's one launch description and its two executors.
//!
//! A [`KernelLaunch`] names a catalog kernel (its [`KernelSpec`]), the geometry, and the
//! arguments bound by parameter name: device memory regions (an address, a byte extent and
//! whether the kernel may write it) and scalars. Nothing in it is host data. The
//! [`Executor`] runs it either on the PTX emulator — which stages the regions' bytes into its
//! own address map and writes the writable ones back — or on a CUDA device through cudarc,
//! where the addresses are passed as they are, on the caller's stream.

use std::sync::Weak;

use kernel_gen::emu::{self, Buffer, Param};
use kernel_gen::{Arch, KernelSpec, param_names};
use retention_core::{Result, RetentionError};

use crate::capture::Recorded;
use crate::cuda::{KernelArg, LaunchDims};
use crate::cuda_target::CudaTarget;
use crate::device::Device;
use crate::module_cache::ModuleCache;
use crate::stream::Stream;
use crate::tensor::DeviceTensor;

/// A byte range of device memory an argument points to.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub address: u64,
    pub bytes: usize,
    pub writable: bool,
    /// Dies with the owning tensor's storage (`None`: caller memory).
    pub alive: Option<Weak<()>>,
}

impl Region {
    /// All of `t`, read only.
    pub fn of(t: &DeviceTensor) -> Self {
        Self {
            address: t.address(),
            bytes: t.num_bytes(),
            writable: false,
            alive: t.liveness(),
        }
    }

    /// All of `t`, writable (the `&mut` borrow proves nobody else holds it).
    pub fn of_mut(t: &mut DeviceTensor) -> Self {
        Self {
            writable: true,
            ..Self::of(t)
        }
    }

    /// `bytes` bytes from byte `offset` of this region.
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] when the range leaves the region.
    pub fn sub(&self, offset: usize, bytes: usize) -> Result<Self> {
        if offset + bytes > self.bytes {
            return Err(RetentionError::DataLength {
                tensor: "device region".into(),
                len: self.bytes,
                shape: vec![offset, bytes],
                needed: offset + bytes,
            });
        }
        Ok(Self {
            address: self.address + offset as u64,
            bytes,
            ..self.clone()
        })
    }
}

/// One kernel argument.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Device memory.
    Ptr(Region),
    /// A null pointer (an absent optional input such as H0).
    Null,
    /// A `.u32` scalar.
    U32(u32),
    /// A `.f32` scalar.
    F32(f32),
}

/// One kernel launch, arguments bound by parameter name.
#[derive(Debug, Clone)]
pub(crate) struct KernelLaunch {
    pub spec: KernelSpec,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    args: Vec<(&'static str, Arg)>,
}

impl KernelLaunch {
    pub fn new(spec: KernelSpec, grid: [u32; 3], block: [u32; 3], shared_bytes: u32) -> Self {
        Self {
            spec,
            grid,
            block,
            shared_bytes,
            args: Vec::new(),
        }
    }

    /// Binds parameter `name` (replacing an earlier binding).
    pub fn bind(&mut self, name: &'static str, arg: Arg) -> &mut Self {
        self.args.retain(|(n, _)| *n != name);
        self.args.push((name, arg));
        self
    }

    /// The arguments in the entry's parameter order.
    ///
    /// # Errors
    /// [`RetentionError::KernelLoad`] for a parameter nothing was bound to.
    pub fn ordered(&self) -> Result<Vec<&Arg>> {
        param_names(&self.spec)
            .into_iter()
            .map(|name| {
                self.args
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, a)| a)
                    .ok_or_else(|| {
                        RetentionError::KernelLoad(format!(
                            "{}: nothing bound to parameter `{name}`",
                            self.spec.entry()
                        ))
                    })
            })
            .collect()
    }

    /// Liveness tokens of the owned memory this launch touches.
    pub fn liveness(&self) -> impl Iterator<Item = Weak<()>> + '_ {
        self.args.iter().filter_map(|(_, a)| match a {
            Arg::Ptr(r) => r.alive.clone(),
            _ => None,
        })
    }
}

/// What runs launches for a GPU-like device.
#[derive(Debug, Clone)]
pub(crate) enum Executor {
    /// The PTX emulator standing in for a GPU of this arch.
    Emulator(Arch),
    /// A CUDA device.
    Cuda(CudaTarget),
}

impl Executor {
    /// The executor of `device`; `None` for the CPU.
    ///
    /// # Errors
    /// As [`CudaTarget::open`].
    pub fn of(device: &Device) -> Result<Option<Self>> {
        Ok(match device {
            Device::Cpu => None,
            Device::Emulated(arch) => Some(Executor::Emulator(*arch)),
            Device::Cuda(ordinal) => Some(Executor::Cuda(CudaTarget::open(*ordinal)?)),
        })
    }

    /// The architecture whose PTX runs here.
    pub fn arch(&self) -> Arch {
        match self {
            Executor::Emulator(arch) => *arch,
            Executor::Cuda(t) => t.arch(),
        }
    }

    /// The GPU's name, or the emulator's.
    pub fn hardware(&self) -> String {
        match self {
            Executor::Emulator(arch) => crate::autotune_cache::emulated_hardware(*arch),
            Executor::Cuda(t) => t.name().to_string(),
        }
    }

    /// Enqueues `launch` on `stream` (recorded instead while an emulated stream captures).
    ///
    /// # Errors
    /// Argument or module failures; an emulator fault; a GPU refusing the launch.
    pub fn launch(&self, launch: &KernelLaunch, stream: &Stream) -> Result<()> {
        if self.record(stream, Recorded::Launch(launch.clone()), launch.liveness()) {
            return Ok(());
        }
        match self {
            Executor::Emulator(_) => run_emulated(launch).map(|_| ()),
            Executor::Cuda(target) => run_cuda(target, launch, stream),
        }
    }

    /// Enqueues a device-to-device copy of `src` into `dst` (equal sizes).
    ///
    /// # Errors
    /// Mismatched sizes; a device failure.
    pub fn copy(&self, src: &Region, dst: &Region, stream: &Stream) -> Result<()> {
        if src.bytes != dst.bytes {
            return Err(RetentionError::DataLength {
                tensor: "device copy".into(),
                len: src.bytes,
                shape: vec![dst.bytes],
                needed: dst.bytes,
            });
        }
        let alive = [src.alive.clone(), dst.alive.clone()];
        let recorded = Recorded::Copy(src.clone(), dst.clone());
        if self.record(stream, recorded, alive.into_iter().flatten()) {
            return Ok(());
        }
        if let Some(s) = stream.cuda() {
            // SAFETY: both regions come from live tensors of this device (checked by the ops
            // that built them) and lie inside them (`Region::sub` checks).
            return unsafe { s.copy_address(src.address, dst.address, src.bytes) };
        }
        // SAFETY: host memory of live tensors; `copy` handles overlap.
        unsafe {
            std::ptr::copy(src.address as *const u8, dst.address as *mut u8, src.bytes);
        }
        Ok(())
    }

    /// Enqueues clearing `dst`.
    ///
    /// # Errors
    /// A device failure.
    pub fn zero(&self, dst: &Region, stream: &Stream) -> Result<()> {
        if self.record(stream, Recorded::Zero(dst.clone()), dst.alive.clone()) {
            return Ok(());
        }
        if let Some(s) = stream.cuda() {
            // SAFETY: as in `copy`.
            return unsafe { s.zero_address(dst.address, dst.bytes) };
        }
        // SAFETY: as in `copy`.
        unsafe { std::ptr::write_bytes(dst.address as *mut u8, 0, dst.bytes) };
        Ok(())
    }

    /// While `stream` captures: keeps the liveness tokens and, on the emulator, the work
    /// itself (CUDA captures the work in the driver). True when the work must not run now.
    fn record(
        &self,
        stream: &Stream,
        work: Recorded,
        alive: impl IntoIterator<Item = Weak<()>>,
    ) -> bool {
        let mut state = stream.capture_state();
        let Some(capture) = state.as_mut() else {
            return false;
        };
        capture.alive.extend(alive);
        match self {
            Executor::Emulator(_) => {
                capture.work.push(work);
                true
            }
            Executor::Cuda(_) => false,
        }
    }
}

/// Runs `launch` on the emulator: each region's bytes are staged into the emulator's address
/// map, and the writable ones are written back after a successful launch.
pub(crate) fn run_emulated(launch: &KernelLaunch) -> Result<emu::EmuReport> {
    let module = ModuleCache::global().get(&launch.spec)?;
    let ordered = launch.ordered()?;
    let mut emu_launch = emu::Launch::new(launch.spec.entry(), launch.grid, launch.block)
        .dynamic_shared(launch.shared_bytes);
    for arg in &ordered {
        emu_launch = emu_launch.arg(match arg {
            Arg::Ptr(r) => {
                // SAFETY: a region is built from a live tensor borrowed for the launch (or, for
                // a replayed graph, checked alive by its token; caller memory is the caller's
                // promise under `DeviceTensor::from_raw`), and lies inside it.
                let bytes =
                    unsafe { std::slice::from_raw_parts(r.address as *const u8, r.bytes) }.to_vec();
                Param::Buffer(Buffer {
                    bytes,
                    dtype: emu::Dtype::U8,
                    output: r.writable,
                })
            }
            Arg::Null => Param::U64(0),
            Arg::U32(x) => Param::U32(*x),
            Arg::F32(x) => Param::F32(*x),
        });
    }
    let report = module
        .emulated
        .launch(&mut emu_launch)
        .map_err(|e| RetentionError::KernelLoad(format!("{}: {e}", launch.spec.entry())))?;
    for (arg, param) in ordered.iter().zip(&emu_launch.params) {
        if let (Arg::Ptr(r), Param::Buffer(b)) = (arg, param)
            && r.writable
        {
            // SAFETY: as above; the region is writable (built from a `&mut` tensor) and the
            // emulator returns exactly its byte count.
            unsafe {
                std::ptr::copy_nonoverlapping(b.bytes.as_ptr(), r.address as *mut u8, r.bytes);
            }
        }
    }
    Ok(report)
}

/// Enqueues `launch` on a CUDA stream with every region passed by address.
fn run_cuda(target: &CudaTarget, launch: &KernelLaunch, stream: &Stream) -> Result<()> {
    let kernel = target.kernel(&launch.spec)?;
    let cuda_stream = stream.cuda().ok_or_else(|| RetentionError::WrongDevice {
        tensor: "stream".into(),
        expected: format!("cuda:{}", target.backend().ordinal()),
        got: stream.device().name(),
    })?;
    let mut args: Vec<KernelArg<'_>> = launch
        .ordered()?
        .into_iter()
        .map(|a| match a {
            Arg::Ptr(r) => KernelArg::u64(r.address),
            Arg::Null => KernelArg::u64(0),
            Arg::U32(x) => KernelArg::u32(*x),
            Arg::F32(x) => KernelArg::f32(*x),
        })
        .collect();
    let dims = LaunchDims {
        grid: (launch.grid[0], launch.grid[1], launch.grid[2]),
        block: (launch.block[0], launch.block[1], launch.block[2]),
        shared_bytes: launch.shared_bytes,
    };
    // SAFETY: every region was built from a tensor of this device whose dtype and shape the op
    // checked against the kernel's contract (the same extents the emulator bounds-checks for
    // the same description in the emulated tests); inputs are bound read-only and the kernels
    // write only their output parameters.
    unsafe { cuda_stream.launch(&kernel, dims, &mut args) }
}
