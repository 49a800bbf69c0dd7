//! The public launch API: a parsed [`Module`], a [`Launch`] description with its [`Param`]s,
//! and typed [`Buffer`]s that are updated in place after a successful run.

use crate::decode::{self, Kernel};
use crate::error::EmuError;
use crate::exec::{self, Launched, global::GlobalMemory};
use crate::parse;
use crate::report::EmuReport;
use crate::time_model::KernelResources;
use crate::types::Ty;

/// Most shared memory one block may use (sm_90: 227 KiB).
pub const MAX_SHARED_BYTES: u64 = 227 * 1024;
/// Most `.local` bytes per thread (the PTX limit).
pub const MAX_LOCAL_BYTES: u64 = 512 * 1024;
/// Most threads in one block.
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Default warp-instruction budget per block before a launch is declared runaway.
pub const DEFAULT_STEP_LIMIT: u64 = 200_000_000;

/// Element type of a [`Buffer`], as named in launch files (`"f32"`, `"bf16"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    Bf16,
    /// IEEE binary64.
    F64,
    /// Unsigned bytes.
    U8,
    /// Signed bytes.
    S8,
    /// u16.
    U16,
    /// i16.
    S16,
    /// u32.
    U32,
    /// i32.
    S32,
    /// u64.
    U64,
    /// i64.
    S64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::S8 => 1,
            Dtype::F16 | Dtype::Bf16 | Dtype::U16 | Dtype::S16 => 2,
            Dtype::F32 | Dtype::U32 | Dtype::S32 => 4,
            Dtype::F64 | Dtype::U64 | Dtype::S64 => 8,
        }
    }
}

/// A global-memory buffer: raw little-endian bytes with an element type, and whether the
/// kernel may write it (a store into a buffer with `output == false` is an error).
#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    /// Little-endian contents; after a successful launch, what the kernel left there.
    pub bytes: Vec<u8>,
    /// Element type (for typed views and launch files).
    pub dtype: Dtype,
    /// Whether the kernel may write this buffer.
    pub output: bool,
}

impl Buffer {
    /// An input (read-only) buffer of f32 values.
    pub fn from_f32(v: &[f32]) -> Buffer {
        Buffer {
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            dtype: Dtype::F32,
            output: false,
        }
    }

    /// An input buffer of f16 values.
    pub fn from_f16(v: &[half::f16]) -> Buffer {
        Buffer {
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            dtype: Dtype::F16,
            output: false,
        }
    }

    /// An input buffer of bf16 values.
    pub fn from_bf16(v: &[half::bf16]) -> Buffer {
        Buffer {
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            dtype: Dtype::Bf16,
            output: false,
        }
    }

    /// An input buffer of u32 values.
    pub fn from_u32(v: &[u32]) -> Buffer {
        Buffer {
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            dtype: Dtype::U32,
            output: false,
        }
    }

    /// A zero-filled output buffer of `len` elements.
    pub fn zeros(dtype: Dtype, len: usize) -> Buffer {
        Buffer {
            bytes: vec![0; len * dtype.size()],
            dtype,
            output: true,
        }
    }

    /// Marks the buffer as writable by the kernel.
    pub fn output(mut self) -> Buffer {
        self.output = true;
        self
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The contents as f32 (reinterpreting the bytes, whatever the dtype).
    pub fn to_f32(&self) -> Vec<f32> {
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The contents as u32.
    pub fn to_u32(&self) -> Vec<u32> {
        self.bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The contents as 16-bit words (f16/bf16 bits).
    pub fn to_u16(&self) -> Vec<u16> {
        self.bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

/// One kernel argument, in declaration order.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// A global buffer; the kernel receives its synthetic 64-bit address (`.u64`/`.b64`/`.s64` param).
    Buffer(Buffer),
    /// A 4-byte integer param (`.u32`/`.s32`/`.b32`).
    U32(u32),
    /// A 4-byte signed integer param.
    S32(i32),
    /// An 8-byte integer param.
    U64(u64),
    /// An 8-byte signed integer param.
    S64(i64),
    /// A `.f32` param.
    F32(f32),
    /// A `.f64` param.
    F64(f64),
    /// A 2-byte param (`.u16`/`.b16`/`.f16` bits).
    U16(u16),
    /// A 1-byte param.
    U8(u8),
}

/// What to run: entry, grid and block shape, dynamic shared memory and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// `.entry` name.
    pub entry: String,
    /// Blocks per grid dimension.
    pub grid: [u32; 3],
    /// Threads per block dimension.
    pub block: [u32; 3],
    /// Bytes of dynamic (`.extern .shared`) shared memory.
    pub dynamic_shared_bytes: u32,
    /// Arguments in declaration order.
    pub params: Vec<Param>,
    /// Warp instructions one block may execute before the launch is declared runaway.
    pub step_limit: u64,
}

impl Launch {
    /// A launch with no params and no dynamic shared memory.
    pub fn new(entry: impl Into<String>, grid: [u32; 3], block: [u32; 3]) -> Launch {
        Launch {
            entry: entry.into(),
            grid,
            block,
            dynamic_shared_bytes: 0,
            params: Vec::new(),
            step_limit: DEFAULT_STEP_LIMIT,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, p: Param) -> Launch {
        self.params.push(p);
        self
    }

    /// Sets the dynamic shared memory size.
    pub fn dynamic_shared(mut self, bytes: u32) -> Launch {
        self.dynamic_shared_bytes = bytes;
        self
    }

    /// The buffer passed as argument `i`, if that argument is a buffer.
    pub fn buffer(&self, i: usize) -> Option<&Buffer> {
        match self.params.get(i) {
            Some(Param::Buffer(b)) => Some(b),
            _ => None,
        }
    }
}

/// Static facts about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Entry name.
    pub name: String,
    /// Parameter names with their PTX types (`"u64"`, `"f32"`, …).
    pub params: Vec<(String, String)>,
    /// Static shared bytes.
    pub static_shared_bytes: u64,
    /// Whether it declares `.extern .shared` (dynamic shared memory).
    pub uses_dynamic_shared: bool,
    /// Per-thread `.local` bytes.
    pub local_bytes: u64,
    /// Declared registers (all types, including predicates).
    pub registers: usize,
    /// Decoded instructions.
    pub instructions: usize,
}

/// A parsed and decoded PTX module, ready to launch any number of times.
#[derive(Debug, Clone)]
pub struct Module {
    kernels: Vec<Kernel>,
    /// `.version`, if given.
    pub version: Option<String>,
    /// `.target` list.
    pub target: Vec<String>,
}

fn param_size_ok(ty: Ty, p: &Param) -> bool {
    let bytes = ty.bytes();
    match p {
        Param::Buffer(_) | Param::U64(_) | Param::S64(_) => bytes == 8 && !ty.is_float(),
        Param::F64(_) => ty == Ty::F64,
        Param::U32(_) | Param::S32(_) => bytes == 4 && !ty.is_float(),
        Param::F32(_) => ty == Ty::F32,
        Param::U16(_) => bytes == 2,
        Param::U8(_) => bytes == 1,
    }
}

impl Module {
    /// Parses and decodes PTX text. Every instruction is decoded here, so an unsupported
    /// instruction anywhere is reported now, with its line, not at launch.
    ///
    /// # Errors
    /// [`EmuError::Parse`] for text outside the grammar, [`EmuError::Unsupported`] for an
    /// instruction, modifier or directive the emulator does not implement.
    pub fn parse(src: &str) -> Result<Module, EmuError> {
        let raw = parse::parse_module(src)?;
        let kernels = decode::decode_module(&raw)?;
        Ok(Module {
            kernels,
            version: raw.version,
            target: raw.target,
        })
    }

    /// Names of the module's entries.
    pub fn entries(&self) -> Vec<&str> {
        self.kernels.iter().map(|k| k.name.as_str()).collect()
    }

    /// Static facts about an entry.
    pub fn entry_info(&self, name: &str) -> Option<EntryInfo> {
        let k = self.kernels.iter().find(|k| k.name == name)?;
        Some(EntryInfo {
            name: k.name.clone(),
            params: k
                .params
                .iter()
                .map(|p| (p.name.clone(), format!("{:?}", p.ty).to_lowercase()))
                .collect(),
            static_shared_bytes: k.shared_static,
            uses_dynamic_shared: k.dyn_shared_offset.is_some(),
            local_bytes: k.local_bytes,
            registers: k.nregs,
            instructions: k.code.len(),
        })
    }

    /// Runs a launch. On success every buffer param holds what the kernel left in it and the
    /// report is returned; on error no buffer is changed.
    ///
    /// # Errors
    /// [`EmuError::NoSuchEntry`] and [`EmuError::InvalidLaunch`] for launches that do not fit
    /// the entry; any check failure during execution (bounds, alignment, races, divergent
    /// collectives, unreachable barriers, undefined operations, step limit).
    pub fn launch(&self, launch: &mut Launch) -> Result<EmuReport, EmuError> {
        let k = self
            .kernels
            .iter()
            .find(|k| k.name == launch.entry)
            .ok_or_else(|| EmuError::NoSuchEntry(launch.entry.clone()))?;
        let bad = |reason: String| EmuError::InvalidLaunch {
            kernel: k.name.clone(),
            reason,
        };
        if launch.grid.contains(&0) || launch.block.contains(&0) {
            return Err(bad("grid and block dimensions must be at least 1".into()));
        }
        let threads = launch.block.iter().map(|&d| d as u64).product::<u64>();
        if threads > MAX_THREADS_PER_BLOCK as u64 {
            return Err(bad(format!(
                "{threads} threads per block exceed {MAX_THREADS_PER_BLOCK}"
            )));
        }
        let dyn_base = k.dyn_shared_offset.unwrap_or(k.shared_static);
        let shared_bytes = dyn_base.saturating_add(launch.dynamic_shared_bytes as u64);
        if shared_bytes > MAX_SHARED_BYTES {
            return Err(bad(format!(
                "{shared_bytes} shared bytes exceed {MAX_SHARED_BYTES}"
            )));
        }
        if k.local_bytes > MAX_LOCAL_BYTES {
            return Err(bad(format!(
                "{} local bytes per thread exceed {MAX_LOCAL_BYTES}",
                k.local_bytes
            )));
        }
        if launch.params.len() != k.params.len() {
            return Err(bad(format!(
                "{} params given, the entry declares {}",
                launch.params.len(),
                k.params.len()
            )));
        }
        let mut buffers = Vec::new();
        for (i, (p, decl)) in launch.params.iter().zip(&k.params).enumerate() {
            if !param_size_ok(decl.ty, p) || decl.bytes != decl.ty.bytes() as u64 {
                return Err(bad(format!(
                    "param {i} `{}` is .{:?}; {p:?} does not fit it",
                    decl.name, decl.ty
                )));
            }
            if let Param::Buffer(b) = p {
                buffers.push((b.bytes.as_slice(), b.output, i));
            }
        }
        let (global, bases) = GlobalMemory::new(&buffers);
        let mut pbytes = vec![0u8; k.param_bytes as usize];
        let mut next_buf = 0;
        for (p, decl) in launch.params.iter().zip(&k.params) {
            let raw: Vec<u8> = match p {
                Param::Buffer(_) => {
                    next_buf += 1;
                    bases[next_buf - 1].to_le_bytes().to_vec()
                }
                Param::U32(v) => v.to_le_bytes().to_vec(),
                Param::S32(v) => v.to_le_bytes().to_vec(),
                Param::U64(v) => v.to_le_bytes().to_vec(),
                Param::S64(v) => v.to_le_bytes().to_vec(),
                Param::F32(v) => v.to_le_bytes().to_vec(),
                Param::F64(v) => v.to_le_bytes().to_vec(),
                Param::U16(v) => v.to_le_bytes().to_vec(),
                Param::U8(v) => vec![*v],
            };
            let o = decl.offset as usize;
            pbytes[o..o + raw.len()].copy_from_slice(&raw);
        }
        let launched = Launched {
            kernel: k,
            params: &pbytes,
            global,
            grid: launch.grid,
            block: launch.block,
            shared_bytes,
            step_limit: launch.step_limit,
        };
        let counters = exec::run_grid(&launched)?;
        let mut out = launched.global.into_bytes().into_iter();
        for p in &mut launch.params {
            if let Param::Buffer(b) = p
                && let Some(bytes) = out.next()
            {
                b.bytes = bytes;
            }
        }
        let resources = KernelResources {
            threads: launch.block.iter().product(),
            registers: k.live_gpr32.clamp(16, 255) as u32,
            shared_bytes: (k.shared_static + u64::from(launch.dynamic_shared_bytes)) as u32,
        };
        Ok(EmuReport::new(
            &k.name,
            (launch.grid, launch.block),
            resources,
            &counters,
        ))
    }
}
