//! The instruction set as data. The builder appends [`Instr`]s, the legalise pass rewrites
//! them, and the emitter turns each one into exactly one line of PTX.

use super::types::{Address, Cmp, Label, Operand, Precision, Reg, Rounding, Space, Ty};

/// Two-operand arithmetic and logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    /// `add` (floats rounded).
    Add,
    /// `sub` (floats rounded).
    Sub,
    /// `mul` of floats (rounded); integers use [`Op::IntMul`].
    Mul,
    /// `div` (integers truncate; floats rounded).
    Div,
    /// `rem` (integers).
    Rem,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// `and` (bitwise; predicates logical).
    And,
    /// `or`.
    Or,
    /// `xor`.
    Xor,
    /// `shl` by a `.u32` amount.
    Shl,
    /// `shr` by a `.u32` amount (arithmetic for signed types).
    Shr,
}

impl BinOp {
    /// The PTX mnemonic.
    pub const fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "sub",
            BinOp::Mul => "mul",
            BinOp::Div => "div",
            BinOp::Rem => "rem",
            BinOp::Min => "min",
            BinOp::Max => "max",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::Xor => "xor",
            BinOp::Shl => "shl",
            BinOp::Shr => "shr",
        }
    }
}

/// Which part of an integer product is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MulMode {
    /// Low half, same width.
    Lo,
    /// High half, same width.
    Hi,
    /// Full product, twice the width (`.u32` → `.u64`).
    Wide,
}

impl MulMode {
    /// The PTX suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            MulMode::Lo => ".lo",
            MulMode::Hi => ".hi",
            MulMode::Wide => ".wide",
        }
    }
}

/// One-operand operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// `neg`.
    Neg,
    /// `abs`.
    Abs,
    /// `not` (bitwise; predicates logical).
    Not,
    /// `ex2.approx` (2^a), optionally flushing subnormals.
    Ex2 {
        /// `.ftz`.
        ftz: bool,
    },
    /// `lg2.approx` (log2 a), optionally flushing subnormals.
    Lg2 {
        /// `.ftz`.
        ftz: bool,
    },
    /// `rcp` (1/a).
    Rcp(Precision),
    /// `rsqrt.approx` (1/√a), optionally flushing subnormals.
    Rsqrt {
        /// `.ftz`.
        ftz: bool,
    },
    /// `sqrt`.
    Sqrt(Precision),
}

/// Lane selection of a warp shuffle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShflMode {
    /// From lane `lane - b`.
    Up,
    /// From lane `lane + b`.
    Down,
    /// From lane `lane ^ b`.
    Bfly,
    /// From lane `b`.
    Idx,
}

impl ShflMode {
    /// The PTX suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            ShflMode::Up => ".up",
            ShflMode::Down => ".down",
            ShflMode::Bfly => ".bfly",
            ShflMode::Idx => ".idx",
        }
    }
}

/// One PTX instruction (or a comment or label), before predication.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `// text` — emitted verbatim so generated kernels read like their source.
    Comment(String),
    /// A branch target.
    Label(Label),
    /// `mov` of a register, immediate or special register.
    Mov {
        /// Destination.
        dst: Reg,
        /// Source.
        src: Operand,
    },
    /// `mov.u32 dst, symbol` — the shared-window address of a shared array.
    MovSymbol {
        /// Destination (`.u32`).
        dst: Reg,
        /// Shared array name.
        symbol: String,
    },
    /// `ld.param` of a kernel parameter.
    LdParam {
        /// Destination.
        dst: Reg,
        /// Parameter name.
        param: String,
    },
    /// `cvta.to.global.u64`: a generic pointer parameter to a global address.
    CvtaToGlobal {
        /// Destination (`.u64`).
        dst: Reg,
        /// Generic address (`.u64`).
        src: Reg,
    },
    /// Two-operand arithmetic or logic; `rnd` is set for float add/sub/mul/div.
    Bin {
        /// The operation.
        op: BinOp,
        /// Instruction type.
        ty: Ty,
        /// Float rounding, when the operation rounds.
        rnd: Option<Rounding>,
        /// Destination.
        dst: Reg,
        /// Left source.
        a: Operand,
        /// Right source.
        b: Operand,
    },
    /// Integer `mul.{lo,hi,wide}`.
    IntMul {
        /// Kept part of the product.
        mode: MulMode,
        /// Source type.
        ty: Ty,
        /// Destination.
        dst: Reg,
        /// Left source.
        a: Operand,
        /// Right source.
        b: Operand,
    },
    /// Integer `mad.{lo,hi,wide}`: a·b + c.
    IntMad {
        /// Kept part of the product.
        mode: MulMode,
        /// Source type.
        ty: Ty,
        /// Destination.
        dst: Reg,
        /// Left factor.
        a: Operand,
        /// Right factor.
        b: Operand,
        /// Addend (destination type).
        c: Operand,
    },
    /// Float `fma`: a·b + c rounded once.
    Fma {
        /// Rounding.
        rnd: Rounding,
        /// Type.
        ty: Ty,
        /// Destination.
        dst: Reg,
        /// Left factor.
        a: Operand,
        /// Right factor.
        b: Operand,
        /// Addend.
        c: Operand,
    },
    /// One-operand operation.
    Un {
        /// The operation.
        op: UnOp,
        /// Type.
        ty: Ty,
        /// Destination.
        dst: Reg,
        /// Source.
        a: Operand,
    },
    /// `setp.cmp.ty dst, a, b`.
    Setp {
        /// Comparison.
        cmp: Cmp,
        /// Type compared.
        ty: Ty,
        /// Destination predicate.
        dst: Reg,
        /// Left source.
        a: Operand,
        /// Right source.
        b: Operand,
    },
    /// `selp.ty dst, a, b, p` (a when p, else b).
    Selp {
        /// Type.
        ty: Ty,
        /// Destination.
        dst: Reg,
        /// Value when `p`.
        a: Operand,
        /// Value otherwise.
        b: Operand,
        /// Selector.
        p: Reg,
    },
    /// `cvt` between register types, with the rounding PTX requires spelled out.
    Cvt {
        /// Destination (its type is the target type).
        dst: Reg,
        /// Source (its type is the source type).
        src: Reg,
        /// Rounding; `None` only where the conversion is exact.
        rnd: Option<Rounding>,
        /// Clamp to the (integer) destination's range (`.sat`).
        sat: bool,
    },
    /// `cvt.rn.{f16x2,bf16x2}.f32 dst, hi, lo`: two f32 rounded into one packed register.
    CvtPack {
        /// Destination (packed type).
        dst: Reg,
        /// Upper half source (`.f32`).
        hi: Operand,
        /// Lower half source (`.f32`).
        lo: Operand,
    },
    /// `mov.b32 dst, {lo, hi}`: two 16-bit registers into one packed register.
    Pack {
        /// Destination (packed type).
        dst: Reg,
        /// Lower half.
        lo: Reg,
        /// Upper half.
        hi: Reg,
    },
    /// `mov.b32 {lo, hi}, src`: a packed register into its two halves.
    Unpack {
        /// Lower half.
        lo: Reg,
        /// Upper half.
        hi: Reg,
        /// Packed source.
        src: Reg,
    },
    /// `ld{.space}{.vN}.type` into one, two or four registers of one type.
    Ld {
        /// State space.
        space: Space,
        /// Destinations (1, 2 or 4; all one type).
        dsts: Vec<Reg>,
        /// Address.
        addr: Address,
    },
    /// `st{.space}{.vN}.type` from one, two or four sources of one type.
    St {
        /// State space.
        space: Space,
        /// Element type.
        ty: Ty,
        /// Sources (1, 2 or 4).
        srcs: Vec<Operand>,
        /// Address.
        addr: Address,
    },
    /// `bar.sync id` — every thread of the CTA waits here.
    BarSync {
        /// Barrier number (0..16).
        id: u32,
    },
    /// `shfl.sync.mode.b32 dst, a, b, c, membermask` — a warp collective.
    WarpShfl {
        /// Lane selection.
        mode: ShflMode,
        /// Destination (32-bit).
        dst: Reg,
        /// Value sent.
        a: Reg,
        /// Lane or delta.
        b: Operand,
        /// Clamp / segment mask.
        c: Operand,
        /// Participating lanes.
        mask: u32,
    },
    /// `mma.sync.aligned.m16n8k16.row.col.f32.{ab}.{ab}.f32 d, a, b, c` — a warp collective:
    /// D (16×8 f32) = A (16×16, row) · B (16×8, col) + C, fragments as the PTX ISA lays them.
    WarpMma {
        /// Element type of A and B (`F16` or `Bf16`).
        ab: Ty,
        /// D fragment: four f32.
        d: [Reg; 4],
        /// A fragment: four 32-bit registers of packed pairs.
        a: [Reg; 4],
        /// B fragment: two 32-bit registers of packed pairs.
        b: [Reg; 2],
        /// C fragment: four f32 (may be `d` itself).
        c: [Reg; 4],
    },
    /// `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16 d, [addr]` — a warp
    /// collective: lanes 8i..8i+7 give the row addresses of 8×8 matrix i.
    WarpLdmatrix {
        /// Transpose each matrix while loading.
        trans: bool,
        /// One 32-bit destination per matrix (1, 2 or 4).
        dsts: Vec<Reg>,
        /// Shared address of this lane's row.
        addr: Address,
    },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], bytes[, src_bytes]`: an asynchronous
    /// global → shared copy that lands at a later `cp.async.wait_group`.
    CpAsync {
        /// `.cg` (bypass L1, 16 bytes only) rather than `.ca`.
        cg: bool,
        /// Bytes copied: 4, 8 or 16.
        bytes: u32,
        /// Shared destination.
        dst: Address,
        /// Global source.
        src: Address,
        /// Bytes actually read from `src`; the rest of the destination is zero-filled.
        src_bytes: Option<Operand>,
    },
    /// `cp.async.commit_group`: close the current group of this thread's copies.
    CpAsyncCommit,
    /// `cp.async.wait_group n`: wait until at most `n` of this thread's groups are pending.
    CpAsyncWait {
        /// Groups allowed to stay in flight.
        pending: u32,
    },
    /// `bra target` (`.uni` when every thread provably takes the same path).
    Bra {
        /// Target.
        target: Label,
        /// Non-divergent branch.
        uni: bool,
    },
    /// `ret`.
    Ret,
}

/// A guard predicate: the instruction runs only in threads where `pred` (or `!pred`) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guard {
    /// A `.pred` register.
    pub pred: Reg,
    /// Run where the predicate is false.
    pub negate: bool,
}

/// An instruction with its optional guard.
#[derive(Debug, Clone, PartialEq)]
pub struct Instr {
    /// `@p` / `@!p`.
    pub guard: Option<Guard>,
    /// The operation.
    pub op: Op,
}
