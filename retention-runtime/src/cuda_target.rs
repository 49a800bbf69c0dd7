//! A CUDA device as a [`LaunchTarget`]: the launch description the emulator runs, executed on
//! a real GPU. Buffers are uploaded, the catalog kernel is launched between two timing
//! events, and output buffers are downloaded back into the description.
//!
//! Modules are loaded once per (device, spec) and shared by every caller in the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use kernel_gen::emu::{Launch, Param};
use kernel_gen::{Arch, KernelSpec};
use retention_core::{Result, RetentionError};

use crate::cuda::{CudaBackend, DeviceBuffer, Kernel, KernelArg, LaunchDims, Stream};
use crate::launch_target::{LaunchReport, LaunchTarget};
use crate::module_cache::ModuleCache;

/// One CUDA device ready to run catalog kernels.
#[derive(Debug, Clone)]
pub struct CudaTarget {
    backend: CudaBackend,
    arch: Arch,
    name: String,
}

type KernelMap = Mutex<HashMap<(usize, KernelSpec), Arc<OnceLock<Result<Kernel>>>>>;

fn kernels() -> &'static KernelMap {
    static KERNELS: OnceLock<KernelMap> = OnceLock::new();
    KERNELS.get_or_init(KernelMap::default)
}

/// What loading catalog kernels into CUDA devices has cost this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CudaLoadStats {
    /// Kernels loaded (per device: a kernel loaded on two GPUs counts twice).
    pub kernels: usize,
    /// Seconds the driver spent loading (JIT-compiling) their PTX.
    pub load_seconds: f64,
}

fn load_stats() -> &'static Mutex<CudaLoadStats> {
    static STATS: OnceLock<Mutex<CudaLoadStats>> = OnceLock::new();
    STATS.get_or_init(Mutex::default)
}

/// Kernels loaded into CUDA devices so far and the driver's load time; generation time is
/// [`ModuleCache::stats`]'s.
pub fn cuda_load_stats() -> CudaLoadStats {
    *load_stats()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn backends() -> &'static Mutex<HashMap<usize, CudaTarget>> {
    static BACKENDS: OnceLock<Mutex<HashMap<usize, CudaTarget>>> = OnceLock::new();
    BACKENDS.get_or_init(Mutex::default)
}

/// The PTX architecture a device of compute capability `(major, minor)` runs: sm_90 PTX on
/// Hopper and newer, sm_80 PTX on Ampere and Ada.
///
/// # Errors
/// [`RetentionError::Unsupported`] below sm_80 (the kernels use `cp.async` and bf16 `mma`).
pub fn arch_for_capability((major, minor): (u32, u32)) -> Result<Arch> {
    match major {
        9.. => Ok(Arch::Sm90),
        8 => Ok(Arch::Sm80),
        _ => Err(RetentionError::Unsupported {
            what: "GPU".into(),
            value: format!("sm_{major}{minor}"),
            reason: "the kernels need sm_80 or newer (cp.async, bf16 mma)".into(),
        }),
    }
}

impl CudaTarget {
    /// Device `ordinal`, opened once per process.
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] without a driver or such a device;
    /// [`RetentionError::Unsupported`] for a GPU older than sm_80.
    pub fn open(ordinal: usize) -> Result<Self> {
        let mut map = backends()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = map.get(&ordinal) {
            return Ok(t.clone());
        }
        let backend = CudaBackend::new(ordinal)?;
        let arch = arch_for_capability(backend.compute_capability()?)?;
        let name = backend.name()?;
        let target = Self {
            backend,
            arch,
            name,
        };
        map.insert(ordinal, target.clone());
        Ok(target)
    }

    /// The backend (context and streams).
    pub fn backend(&self) -> &CudaBackend {
        &self.backend
    }

    /// The stream every runtime operation on this device uses.
    pub fn stream(&self) -> &Stream {
        self.backend.default_stream()
    }

    /// The architecture whose PTX this device runs.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel of `spec`, loaded into this device on first use.
    ///
    /// # Errors
    /// As [`ModuleCache::get`] and [`CudaBackend::load_module`].
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Kernel> {
        let slot = {
            let mut map = kernels()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry((self.backend.ordinal(), *spec)).or_default())
        };
        slot.get_or_init(|| {
            let module = ModuleCache::global().get(spec)?;
            let t0 = std::time::Instant::now();
            let kernel = self
                .backend
                .load_module(&module.ptx)?
                .kernel(&module.entry)?;
            let mut stats = load_stats()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            stats.kernels += 1;
            stats.load_seconds += t0.elapsed().as_secs_f64();
            Ok(kernel)
        })
        .clone()
    }

    /// Runs `launch` with each parameter `i` of `residents` bound to its device buffer
    /// (state that lives on the GPU, read and written in place; the launch's own entry at
    /// that index is ignored). Other outputs are downloaded into `launch`.
    ///
    /// # Errors
    /// As [`LaunchTarget::execute`].
    pub fn execute_resident(
        &self,
        spec: &KernelSpec,
        launch: &mut Launch,
        residents: Vec<(usize, &mut DeviceBuffer<f32>)>,
    ) -> Result<LaunchReport> {
        let kernel = self.kernel(spec)?;
        let stream = self.stream();
        let at: Vec<usize> = residents.iter().map(|r| r.0).collect();
        let mut staged = Staged::upload(stream, launch, &at)?;
        let start = stream.record_event()?;
        staged.launch(stream, &kernel, launch, residents)?;
        let end = stream.record_event()?;
        staged.download_into(stream, launch)?;
        let seconds = f64::from(start.elapsed_ms(&end)?) / 1e3;
        Ok(LaunchReport::Measured { seconds })
    }

    /// Median GPU seconds of `launch` over `reps` timed repetitions (after one warm-up),
    /// with its buffers uploaded once; outputs are not read back.
    ///
    /// # Errors
    /// As [`LaunchTarget::execute`].
    pub fn time(&self, spec: &KernelSpec, launch: &Launch, reps: usize) -> Result<f64> {
        let kernel = self.kernel(spec)?;
        let stream = self.stream();
        let mut staged = Staged::upload(stream, launch, &[])?;
        staged.launch(stream, &kernel, launch, Vec::new())?;
        let mut times = Vec::with_capacity(reps.max(1));
        for _ in 0..reps.max(1) {
            let start = stream.record_event()?;
            staged.launch(stream, &kernel, launch, Vec::new())?;
            let end = stream.record_event()?;
            times.push(f64::from(start.elapsed_ms(&end)?) / 1e3);
        }
        stream.synchronize()?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

impl LaunchTarget for CudaTarget {
    fn execute(&self, spec: &KernelSpec, launch: &mut Launch) -> Result<LaunchReport> {
        self.execute_resident(spec, launch, Vec::new())
    }

    fn arch(&self) -> Arch {
        self.arch
    }
}

/// A launch's buffers on the device, one slot per parameter (`None` for scalars and the
/// resident parameter).
struct Staged {
    buffers: Vec<Option<DeviceBuffer<u8>>>,
}

impl Staged {
    fn upload(stream: &Stream, launch: &Launch, resident: &[usize]) -> Result<Self> {
        let buffers = launch
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                Param::Buffer(b) if !resident.contains(&i) => {
                    if b.bytes.is_empty() {
                        // A kernel never touches an empty buffer; pass a valid address.
                        stream.alloc_zeros::<u8>(1).map(Some)
                    } else {
                        stream.upload(&b.bytes).map(Some)
                    }
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { buffers })
    }

    fn launch(
        &mut self,
        stream: &Stream,
        kernel: &Kernel,
        launch: &Launch,
        residents: Vec<(usize, &mut DeviceBuffer<f32>)>,
    ) -> Result<()> {
        let mut bound: Vec<Option<&mut DeviceBuffer<f32>>> =
            launch.params.iter().map(|_| None).collect();
        for (i, b) in residents {
            let slot = bound.get_mut(i).ok_or_else(|| {
                RetentionError::KernelLoad(format!(
                    "{}: resident buffer for argument {i} of {}",
                    launch.entry,
                    launch.params.len()
                ))
            })?;
            *slot = Some(b);
        }
        let mut args = Vec::with_capacity(launch.params.len());
        let params = launch.params.iter().zip(self.buffers.iter_mut()).zip(bound);
        for (i, ((param, buffer), resident)) in params.enumerate() {
            if let Some(b) = resident {
                args.push(KernelArg::output(b));
                continue;
            }
            args.push(match (param, buffer) {
                (Param::Buffer(b), Some(dev)) => {
                    if b.output {
                        KernelArg::output(dev)
                    } else {
                        KernelArg::input(&*dev)
                    }
                }
                (Param::U32(x), _) => KernelArg::u32(*x),
                (Param::S32(x), _) => KernelArg::u32(x.cast_unsigned()),
                (Param::F32(x), _) => KernelArg::f32(*x),
                (Param::U64(x), _) => KernelArg::u64(*x),
                (Param::S64(x), _) => KernelArg::u64(x.cast_unsigned()),
                (other, _) => {
                    return Err(RetentionError::KernelLoad(format!(
                        "{}: argument {i} ({other:?}) has no CUDA form here",
                        launch.entry
                    )));
                }
            });
        }
        let dims = LaunchDims {
            grid: (launch.grid[0], launch.grid[1], launch.grid[2]),
            block: (launch.block[0], launch.block[1], launch.block[2]),
            shared_bytes: launch.dynamic_shared_bytes,
        };
        // SAFETY: the launch description is the one the emulator executes for the same spec:
        // each buffer holds the element type and the extent the kernel addresses for this
        // grid and these scalars (the emulator bounds-checks exactly these descriptions in
        // the catalog tests), inputs are uploaded read-only copies the kernel does not
        // write (the emulator refuses stores to non-output buffers), and the resident
        // buffer is the f32 state the description's placeholder stands for.
        unsafe { stream.launch(kernel, dims, &mut args) }
    }

    fn download_into(&self, stream: &Stream, launch: &mut Launch) -> Result<()> {
        for (param, buffer) in launch.params.iter_mut().zip(&self.buffers) {
            if let (Param::Buffer(b), Some(dev)) = (param, buffer)
                && b.output
                && !b.bytes.is_empty()
            {
                stream.copy_to_host(dev, &mut b.bytes)?;
            }
        }
        stream.synchronize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_gen::GammaSet;
    use retention_core::Dtype;

    #[test]
    fn the_ptx_arch_follows_the_compute_capability() {
        assert_eq!(arch_for_capability((9, 0)).unwrap(), Arch::Sm90);
        assert_eq!(arch_for_capability((10, 0)).unwrap(), Arch::Sm90);
        assert_eq!(arch_for_capability((8, 0)).unwrap(), Arch::Sm80);
        assert_eq!(arch_for_capability((8, 9)).unwrap(), Arch::Sm80);
        assert!(matches!(
            arch_for_capability((7, 5)),
            Err(RetentionError::Unsupported { .. })
        ));
    }

    #[test]
    fn a_kernel_is_loaded_once_per_device_and_counted() {
        let target = match CudaTarget::open(0) {
            Ok(t) => t,
            Err(e) => {
                assert!(matches!(e, RetentionError::NoDevice(_)), "{e}");
                assert_eq!(cuda_load_stats(), CudaLoadStats::default());
                return;
            }
        };
        let spec = KernelSpec::decode(64, 64, GammaSet::Runtime, Dtype::Bf16, target.arch());
        let before = cuda_load_stats();
        target.kernel(&spec).unwrap();
        target.kernel(&spec).unwrap();
        let after = cuda_load_stats();
        assert!(after.kernels - before.kernels <= 1);
        assert!(after.load_seconds >= before.load_seconds);
    }
}
