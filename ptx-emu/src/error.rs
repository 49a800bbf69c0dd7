//! Every way parsing or running PTX can fail, as one typed error.

use std::fmt;

/// Where in a running kernel something went wrong: kernel, instruction (text and source
/// line), block and thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Entry name.
    pub kernel: String,
    /// 1-based line of the instruction in the PTX text.
    pub line: usize,
    /// The instruction as written.
    pub instruction: String,
    /// `%ctaid` of the block.
    pub block: [u32; 3],
    /// `%tid` of the thread.
    pub thread: [u32; 3],
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel `{}` line {} `{}` block {:?} thread {:?}",
            self.kernel, self.line, self.instruction, self.block, self.thread
        )
    }
}

/// Access kinds named in race reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// A load.
    Read,
    /// A store (or the shared write of a completing `cp.async`).
    Write,
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
        })
    }
}

/// Errors from parsing, launching or executing PTX.
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// The PTX text does not follow the grammar this emulator reads.
    #[error("PTX parse error at line {line}: {message}")]
    Parse {
        /// 1-based source line.
        line: usize,
        /// What was expected or found.
        message: String,
    },
    /// A well-formed instruction or directive this emulator does not implement.
    #[error("unsupported PTX at line {line}: `{instruction}`: {reason}")]
    Unsupported {
        /// 1-based source line.
        line: usize,
        /// The statement as written.
        instruction: String,
        /// Which part is not supported.
        reason: String,
    },
    /// The launch names an entry the module does not have.
    #[error("no entry named `{0}` in the module")]
    NoSuchEntry(String),
    /// The launch description does not fit the entry (params, sizes, grid).
    #[error("invalid launch of `{kernel}`: {reason}")]
    InvalidLaunch {
        /// Entry name.
        kernel: String,
        /// What does not fit.
        reason: String,
    },
    /// A global-space access that falls outside every buffer.
    #[error("{site}: global {kind} of {size} bytes at 0x{address:x} is outside every allocation")]
    GlobalOutOfBounds {
        /// Where.
        site: Box<Site>,
        /// Read or write.
        kind: AccessKind,
        /// Synthetic 64-bit address.
        address: u64,
        /// Access size in bytes.
        size: u32,
    },
    /// A shared-space access outside the declared static + dynamic size.
    #[error(
        "{site}: shared {kind} of {size} bytes at offset {offset} is outside the {shared_bytes}-byte shared window"
    )]
    SharedOutOfBounds {
        /// Where.
        site: Box<Site>,
        /// Read or write.
        kind: AccessKind,
        /// Offset in the block's shared window.
        offset: u64,
        /// Access size in bytes.
        size: u32,
        /// Declared static + dynamic shared bytes.
        shared_bytes: u64,
    },
    /// A store or atomic into a buffer the launch did not mark as an output.
    #[error(
        "{site}: write of {size} bytes at 0x{address:x} into input buffer (param {param}) not marked as output"
    )]
    WriteToInput {
        /// Where.
        site: Box<Site>,
        /// Address written.
        address: u64,
        /// Access size in bytes.
        size: u32,
        /// Index of the kernel parameter that holds the buffer.
        param: usize,
    },
    /// A buffer both read through the non-coherent path (`ld.global.nc`, `ldu`) and written
    /// in the same launch: the ISA requires `.nc` data to be read-only for the launch.
    #[error(
        "{site}: buffer (param {param}) at 0x{address:x} is both read with ld.global.nc and written in this launch"
    )]
    NonCoherentWrittenBuffer {
        /// The access that completed the conflict.
        site: Box<Site>,
        /// Address of that access.
        address: u64,
        /// Index of the kernel parameter that holds the buffer.
        param: usize,
    },
    /// A local or param access outside its space.
    #[error(
        "{site}: {space} access of {size} bytes at offset {offset} is outside the {limit}-byte space"
    )]
    OutOfBounds {
        /// Where.
        site: Box<Site>,
        /// `local` or `param`.
        space: &'static str,
        /// Offset in that space.
        offset: u64,
        /// Access size in bytes.
        size: u32,
        /// Size of the space.
        limit: u64,
    },
    /// An access whose address is not a multiple of its size.
    #[error("{site}: misaligned {size}-byte access at address 0x{address:x}")]
    Misaligned {
        /// Where.
        site: Box<Site>,
        /// Address (space-specific).
        address: u64,
        /// Required alignment.
        size: u32,
    },
    /// Two different threads touched the same shared word between barriers, one writing.
    #[error(
        "{site}: shared-memory race on byte offset {offset}: this {kind} conflicts with a {other_kind} by thread {other_thread:?} since the last barrier"
    )]
    SharedRace {
        /// The second access.
        site: Box<Site>,
        /// Offset of the 4-byte word.
        offset: u64,
        /// This access.
        kind: AccessKind,
        /// The earlier conflicting access.
        other_kind: AccessKind,
        /// `%tid` of the earlier accessor; `[u32::MAX; 3]` when several threads read the
        /// byte before this write.
        other_thread: [u32; 3],
    },
    /// A warp-synchronous instruction reached while lanes it needs are not with it.
    #[error(
        "{site}: warp collective reached by a divergent warp: needs lanes {needed:#010x}, active {active:#010x}"
    )]
    DivergentCollective {
        /// Where (thread = first active lane).
        site: Box<Site>,
        /// Lanes that must execute it together.
        needed: u32,
        /// Lanes that did.
        active: u32,
    },
    /// A barrier some threads wait on that the others can never reach.
    #[error(
        "kernel `{kernel}` block {block:?}: barrier not reached by all threads: thread {waiting:?} waits at line {line} while thread {missing:?} {reason}"
    )]
    BarrierNotReached {
        /// Entry name.
        kernel: String,
        /// `%ctaid`.
        block: [u32; 3],
        /// A waiting thread.
        waiting: [u32; 3],
        /// Line of the barrier it waits at.
        line: usize,
        /// A thread that will not arrive.
        missing: [u32; 3],
        /// "has exited" or "waits at another barrier".
        reason: String,
    },
    /// A value the ISA leaves undefined or an illegal operand value at run time.
    #[error("{site}: {reason}")]
    Undefined {
        /// Where.
        site: Box<Site>,
        /// What is undefined (division by zero, inactive shuffle source, …).
        reason: String,
    },
    /// The block ran more warp instructions than the configured budget (an endless loop?).
    #[error("kernel `{kernel}` block {block:?} exceeded {limit} warp instructions")]
    StepLimit {
        /// Entry name.
        kernel: String,
        /// `%ctaid`.
        block: [u32; 3],
        /// The budget.
        limit: u64,
    },
    /// A launch-file problem (JSON, dtype, sizes).
    #[error("launch file {path}: {message}")]
    LaunchFile {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
