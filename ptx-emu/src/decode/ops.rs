//! The pre-decoded instruction set: registers are indices, symbols are offsets, labels are
//! instruction indices. The executor never looks at a string.

use crate::types::{Fmt, IntRnd, Rnd, Ty};

/// Index into a warp's register file (each register has 32 lane slots).
pub(crate) type Reg = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
}

/// A source operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    Reg(Reg),
    Imm(u64),
    Special(Special),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Shared,
    Local,
    Param,
    /// Classified per address at run time (global, shared window or local window).
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddrBase {
    Reg(Reg),
    /// A resolved symbol or absolute address.
    Abs(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addr {
    pub base: AddrBase,
    pub offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    AddSat,
    Sub,
    SubSat,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntUnOp {
    Neg,
    Abs,
    Not,
    Cnot,
    Popc,
    Clz,
    Brev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatUnOp {
    Neg,
    Abs,
    Ex2,
    Lg2,
    Rcp,
    Rsqrt,
    Sqrt,
    Sin,
    Cos,
    Tanh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MadMode {
    Lo,
    Hi,
    Wide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteMode {
    Ballot,
    Any,
    All,
    Uni,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    Exch,
    Cas,
    And,
    Or,
    Xor,
}

/// Float format of an arithmetic instruction, with packed pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FType {
    pub fmt: Fmt,
    /// `.f16x2` / `.bf16x2`: the op runs on both 16-bit halves.
    pub packed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FMods {
    pub rnd: Rnd,
    pub ftz: bool,
    pub sat: bool,
}

/// Instruction class for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Int,
    Fp32,
    Fp16,
    Fp64,
    Sfu,
    LdGlobal,
    StGlobal,
    LdShared,
    StShared,
    LdLocal,
    StLocal,
    LdParam,
    Mma,
    Shfl,
    Control,
    Barrier,
    Atomic,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    Mov {
        ty: Ty,
        d: Reg,
        a: Src,
    },
    /// `mov.b32 %r, {%h0, %h1}`: pack parts (low first).
    Pack {
        part_bits: u32,
        d: Reg,
        parts: Vec<Src>,
    },
    /// `mov.b32 {%h0, %h1}, %r`: unpack (low first).
    Unpack {
        part_bits: u32,
        ds: Vec<Reg>,
        a: Src,
    },
    Int {
        op: IntOp,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
    },
    Float {
        op: FloatOp,
        ft: FType,
        m: FMods,
        d: Reg,
        a: Src,
        b: Src,
    },
    Mad {
        mode: MadMode,
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Fma {
        ft: FType,
        m: FMods,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    /// `lop3.b32 d, a, b, c, lut`: bitwise function given by its truth table.
    Lop3 {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
        lut: u8,
    },
    /// `bfe`: extract `len` bits at `pos` (sign-extended for signed types).
    Bfe {
        ty: Ty,
        d: Reg,
        a: Src,
        pos: Src,
        len: Src,
    },
    /// `bfi`: insert the low `len` bits of `f` into `base` at `pos`.
    Bfi {
        ty: Ty,
        d: Reg,
        f: Src,
        base: Src,
        pos: Src,
        len: Src,
    },
    /// `prmt.b32` (default mode): byte permute of `{b, a}` by selector `c`.
    Prmt {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    IntUn {
        op: IntUnOp,
        ty: Ty,
        d: Reg,
        a: Src,
    },
    FloatUn {
        op: FloatUnOp,
        ft: FType,
        m: FMods,
        d: Reg,
        a: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        d: Reg,
        d2: Option<Reg>,
        a: Src,
        b: Src,
        /// `.and/.or/.xor` with a (possibly negated) predicate.
        comb: Option<(BoolOp, Src, bool)>,
    },
    Selp {
        ty: Ty,
        d: Reg,
        a: Src,
        b: Src,
        p: Src,
    },
    Cvt {
        dst: Ty,
        src: Ty,
        rnd: Rnd,
        irnd: Option<IntRnd>,
        sat: bool,
        ftz: bool,
        d: Reg,
        a: Src,
    },
    /// `cvt.rn.f16x2.f32 d, a, b`: `a` to the upper half, `b` to the lower.
    CvtPack {
        fmt: Fmt,
        rnd: Rnd,
        sat: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    Cvta {
        to_generic: bool,
        space: Space,
        d: Reg,
        a: Src,
    },
    Ld {
        space: Space,
        ty: Ty,
        n: u8,
        d: [Reg; 4],
        addr: Addr,
        /// `.nc` / `ldu`: the data must be read-only for the whole launch.
        nc: bool,
    },
    St {
        space: Space,
        ty: Ty,
        n: u8,
        s: [Src; 4],
        addr: Addr,
    },
    Bra {
        target: u32,
    },
    Exit,
    Bar {
        id: Src,
        count: Option<Src>,
    },
    Fence,
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Option<Reg>,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    /// `vote.sync.{ballot,any,all,uni}`; `a` is a predicate, negated when `neg`.
    Vote {
        mode: VoteMode,
        d: Reg,
        a: Src,
        neg: bool,
        mask: Src,
    },
    /// `activemask.b32 d`.
    ActiveMask {
        d: Reg,
    },
    Mma {
        ab: Fmt,
        d: [Reg; 4],
        a: [Src; 4],
        b: [Src; 2],
        c: [Src; 4],
    },
    Ldmatrix {
        num: u8,
        trans: bool,
        space: Space,
        d: [Reg; 4],
        addr: Addr,
    },
    CpAsync {
        bytes: u32,
        src_bytes: Option<Src>,
        dst: Addr,
        src: Addr,
    },
    CpAsyncCommit,
    /// `wait_group n`, or `wait_all` (which commits outstanding copies first).
    CpAsyncWait {
        n: u32,
        all: bool,
    },
    Atom {
        op: AtomOp,
        ty: Ty,
        space: Space,
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Option<Src>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Instr {
    pub op: Op,
    pub guard: Option<(Reg, bool)>,
    pub class: Class,
    /// Registers the instruction reads (the time model's scoreboard; not used to execute).
    pub reads: Box<[Reg]>,
    /// Registers a global load writes, which stay pending until a reader waits on them.
    pub loads: Box<[Reg]>,
    /// Registers the instruction writes (for the register-pressure estimate).
    pub writes: Box<[Reg]>,
}
