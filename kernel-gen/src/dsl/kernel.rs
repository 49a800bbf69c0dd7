//! A built kernel: its signature, shared arrays, registers and instruction list.

use super::ops::Instr;
use super::types::Ty;
use crate::Arch;

/// A kernel parameter (`.param .u64 p_q`): pointers are `.u64`, scalars `.u32`/`.f32`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name, as written in the PTX signature.
    pub name: String,
    /// Type.
    pub ty: Ty,
}

/// A statically sized shared-memory array declared in the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedArray {
    /// Symbol.
    pub name: String,
    /// Size in bytes.
    pub bytes: u32,
    /// Alignment in bytes.
    pub align: u32,
    /// What it holds (emitted next to the declaration, with the byte count).
    pub comment: String,
}

/// A complete kernel, ready to legalise and emit.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Entry name.
    pub name: String,
    /// Target architecture.
    pub arch: Arch,
    /// Lines of the module header comment (the spec, typically).
    pub header: Vec<String>,
    /// Parameters, in launch order.
    pub params: Vec<Param>,
    /// Shared arrays.
    pub shared: Vec<SharedArray>,
    /// The dynamic shared-memory window (`.extern .shared name[]`), sized at launch; its
    /// `bytes` is what the kernel needs and what the launch must pass.
    pub dynamic_shared: Option<SharedArray>,
    /// `.maxntid` (threads per CTA), which lets ptxas budget registers.
    pub max_threads: Option<u32>,
    /// `.minnctapersm`: CTAs that must fit on one SM at once; 1 lets ptxas give a
    /// register-hungry tensor-core kernel every register rather than spill.
    pub min_ctas_per_sm: Option<u32>,
    /// Registers allocated so far, per [`Ty::index`].
    pub reg_counts: [u32; Ty::ALL.len()],
    /// The body.
    pub instrs: Vec<Instr>,
}

impl Kernel {
    /// Total bytes of static shared memory.
    pub fn shared_bytes(&self) -> u32 {
        self.shared.iter().map(|s| s.bytes).sum()
    }
}
