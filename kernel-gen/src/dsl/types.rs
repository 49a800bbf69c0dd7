//! The DSL's value vocabulary: register types, registers, immediates, special registers,
//! state spaces, addresses and the small enums (comparison, rounding) instructions take.

use std::fmt;

/// A PTX register type. Every register has exactly one; instructions are checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ty {
    /// Predicate (`.pred`).
    Pred,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    S32,
    /// Unsigned 64-bit integer (addresses).
    U64,
    /// IEEE binary16.
    F16,
    /// bfloat16 (declared `.b16`: PTX has no `.bf16` register type).
    Bf16,
    /// IEEE binary32.
    F32,
    /// Two packed binary16 values.
    F16x2,
    /// Two packed bfloat16 values (declared `.b32`).
    Bf16x2,
}

impl Ty {
    /// Every type, in declaration order.
    pub const ALL: [Ty; 9] = [
        Ty::Pred,
        Ty::U32,
        Ty::S32,
        Ty::U64,
        Ty::F16,
        Ty::Bf16,
        Ty::F32,
        Ty::F16x2,
        Ty::Bf16x2,
    ];

    /// Position in [`Ty::ALL`] (indexes per-type register counters).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Width in bits (a predicate counts as 1).
    pub const fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::F16 | Ty::Bf16 => 16,
            Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => 32,
            Ty::U64 => 64,
        }
    }

    /// Whether arithmetic on this type is floating point.
    pub const fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2)
    }

    /// Whether this is an integer type.
    pub const fn is_int(self) -> bool {
        matches!(self, Ty::U32 | Ty::S32 | Ty::U64)
    }

    /// Whether this is a 16-bit float or a pair of them (arithmetic needs sm_80 or later).
    pub const fn is_half(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2)
    }

    /// Instruction type suffix for arithmetic (`.f32`, `.u32`, `.bf16x2`, ...).
    pub const fn suffix(self) -> &'static str {
        match self {
            Ty::Pred => ".pred",
            Ty::U32 => ".u32",
            Ty::S32 => ".s32",
            Ty::U64 => ".u64",
            Ty::F16 => ".f16",
            Ty::Bf16 => ".bf16",
            Ty::F32 => ".f32",
            Ty::F16x2 => ".f16x2",
            Ty::Bf16x2 => ".bf16x2",
        }
    }

    /// Bit-type suffix of the same width (`.b16`, `.b32`, `.b64`; `.pred` for predicates),
    /// used by the logic ops `and/or/xor/not/shl`.
    pub const fn bit_suffix(self) -> &'static str {
        match self {
            Ty::Pred => ".pred",
            Ty::F16 | Ty::Bf16 => ".b16",
            Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => ".b32",
            Ty::U64 => ".b64",
        }
    }

    /// Type used in the `.reg` declaration.
    pub const fn decl(self) -> &'static str {
        match self {
            Ty::Bf16 => ".b16",
            Ty::Bf16x2 => ".b32",
            other => other.suffix(),
        }
    }

    /// Register name prefix; names stay distinct because a digit always follows.
    pub const fn prefix(self) -> &'static str {
        match self {
            Ty::Pred => "%p",
            Ty::U32 => "%r",
            Ty::S32 => "%i",
            Ty::U64 => "%rd",
            Ty::F16 => "%h",
            Ty::Bf16 => "%hb",
            Ty::F32 => "%f",
            Ty::F16x2 => "%hh",
            Ty::Bf16x2 => "%hbb",
        }
    }

    /// The packed pair type of a 16-bit float, or `None`.
    pub const fn packed(self) -> Option<Ty> {
        match self {
            Ty::F16 => Some(Ty::F16x2),
            Ty::Bf16 => Some(Ty::Bf16x2),
            _ => None,
        }
    }

    /// The element type of a packed pair, or `None`.
    pub const fn unpacked(self) -> Option<Ty> {
        match self {
            Ty::F16x2 => Some(Ty::F16),
            Ty::Bf16x2 => Some(Ty::Bf16),
            _ => None,
        }
    }
}

/// A virtual register: its type and its index within that type's `.reg` range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reg {
    /// The register's type.
    pub ty: Ty,
    /// Index within the range `%prefix<N>`.
    pub id: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.ty.prefix(), self.id)
    }
}

/// An immediate. Floats are stored as bits so they print exactly (`0f3F800000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Imm {
    /// An integer, valid for any integer type it fits.
    Int(i64),
    /// An f32, as bits.
    F32(u32),
    /// An f16, as bits (legalised into a register: PTX arithmetic takes no f16 literal).
    F16(u16),
    /// A bf16, as bits (legalised into a register likewise).
    Bf16(u16),
    /// Two packed 16-bit floats, as bits (legalised into a register likewise).
    Packed(u32),
}

impl Imm {
    /// An exact f32 immediate.
    pub fn f32(x: f32) -> Self {
        Imm::F32(x.to_bits())
    }

    /// Whether this immediate can stand where a value of type `ty` is expected.
    pub fn fits(self, ty: Ty) -> bool {
        match self {
            Imm::Int(v) => match ty {
                Ty::U32 => u32::try_from(v).is_ok() || i32::try_from(v).is_ok(),
                Ty::S32 => i32::try_from(v).is_ok(),
                Ty::U64 => true,
                _ => false,
            },
            Imm::F32(_) => ty == Ty::F32,
            Imm::F16(_) => ty == Ty::F16,
            Imm::Bf16(_) => ty == Ty::Bf16,
            Imm::Packed(_) => matches!(ty, Ty::F16x2 | Ty::Bf16x2),
        }
    }
}

impl fmt::Display for Imm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Imm::Int(v) => write!(f, "{v}"),
            Imm::F32(bits) => write!(f, "0f{bits:08X}"),
            Imm::F16(bits) | Imm::Bf16(bits) => write!(f, "0x{bits:04X}"),
            Imm::Packed(bits) => write!(f, "0x{bits:08X}"),
        }
    }
}

/// A read-only special register (all `.u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sreg {
    /// `%tid.{x,y,z}` (axis 0..3).
    Tid(Axis),
    /// `%ntid.{x,y,z}`.
    Ntid(Axis),
    /// `%ctaid.{x,y,z}`.
    Ctaid(Axis),
    /// `%nctaid.{x,y,z}`.
    Nctaid(Axis),
    /// `%laneid`.
    LaneId,
}

/// A grid or block axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Axis {
    /// `.x`
    X,
    /// `.y`
    Y,
    /// `.z`
    Z,
}

impl fmt::Display for Sreg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let axis = |a: &Axis| match a {
            Axis::X => "x",
            Axis::Y => "y",
            Axis::Z => "z",
        };
        match self {
            Sreg::Tid(a) => write!(f, "%tid.{}", axis(a)),
            Sreg::Ntid(a) => write!(f, "%ntid.{}", axis(a)),
            Sreg::Ctaid(a) => write!(f, "%ctaid.{}", axis(a)),
            Sreg::Nctaid(a) => write!(f, "%nctaid.{}", axis(a)),
            Sreg::LaneId => f.write_str("%laneid"),
        }
    }
}

/// An instruction source: a register, an immediate or a special register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A virtual register.
    Reg(Reg),
    /// An immediate.
    Imm(Imm),
    /// A special register (legalised into a `mov` for every instruction but `mov`).
    Sreg(Sreg),
}

impl Operand {
    /// The register type this operand carries, if it is not an untyped immediate.
    pub fn ty(self) -> Option<Ty> {
        match self {
            Operand::Reg(r) => Some(r.ty),
            Operand::Sreg(_) => Some(Ty::U32),
            Operand::Imm(Imm::F32(_)) => Some(Ty::F32),
            Operand::Imm(Imm::F16(_)) => Some(Ty::F16),
            Operand::Imm(Imm::Bf16(_)) => Some(Ty::Bf16),
            Operand::Imm(Imm::Int(_) | Imm::Packed(_)) => None,
        }
    }

    /// Whether this operand can stand where a value of type `ty` is expected.
    pub fn fits(self, ty: Ty) -> bool {
        match self {
            Operand::Reg(r) => r.ty == ty,
            Operand::Sreg(_) => matches!(ty, Ty::U32 | Ty::S32),
            Operand::Imm(i) => i.fits(ty),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(r) => r.fmt(f),
            Operand::Imm(i) => i.fmt(f),
            Operand::Sreg(s) => s.fmt(f),
        }
    }
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Self {
        Operand::Reg(r)
    }
}
impl From<Imm> for Operand {
    fn from(i: Imm) -> Self {
        Operand::Imm(i)
    }
}
impl From<Sreg> for Operand {
    fn from(s: Sreg) -> Self {
        Operand::Sreg(s)
    }
}
impl From<u32> for Operand {
    fn from(v: u32) -> Self {
        Operand::Imm(Imm::Int(i64::from(v)))
    }
}
impl From<i32> for Operand {
    fn from(v: i32) -> Self {
        Operand::Imm(Imm::Int(i64::from(v)))
    }
}
impl From<u64> for Operand {
    fn from(v: u64) -> Self {
        Operand::Imm(Imm::Int(v as i64))
    }
}
impl From<f32> for Operand {
    fn from(v: f32) -> Self {
        Operand::Imm(Imm::f32(v))
    }
}

/// A memory state space reachable by `ld`/`st`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    /// `.global` (addresses are `.u64` after `cvta.to.global`).
    Global,
    /// `.shared` (addresses are `.u32` offsets in the shared window, or a symbol).
    Shared,
}

impl Space {
    /// The PTX state-space suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Space::Global => ".global",
            Space::Shared => ".shared",
        }
    }
}

/// The base of a memory address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrBase {
    /// A register holding the address.
    Reg(Reg),
    /// A shared array declared in the module, by name.
    Symbol(String),
}

/// `[base+offset]`: a base plus a constant byte offset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Register or symbol.
    pub base: AddrBase,
    /// Constant byte offset.
    pub offset: i64,
}

impl Address {
    /// `[reg+offset]`.
    pub fn reg(base: Reg, offset: i64) -> Self {
        Address {
            base: AddrBase::Reg(base),
            offset,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        match &self.base {
            AddrBase::Reg(r) => r.fmt(f)?,
            AddrBase::Symbol(s) => f.write_str(s)?,
        }
        // PTX spells a negative offset `[%rd1+-4]`.
        if self.offset != 0 {
            write!(f, "+{}", self.offset)?;
        }
        f.write_str("]")
    }
}

/// Comparison for `setp` (ordered for floats: false when either side is NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// The PTX comparison suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Cmp::Eq => ".eq",
            Cmp::Ne => ".ne",
            Cmp::Lt => ".lt",
            Cmp::Le => ".le",
            Cmp::Gt => ".gt",
            Cmp::Ge => ".ge",
        }
    }
}

/// IEEE rounding of a float result (also used by float-producing `cvt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// To nearest, ties to even.
    Rn,
    /// Toward zero.
    Rz,
    /// Toward −∞.
    Rm,
    /// Toward +∞.
    Rp,
}

impl Rounding {
    /// Suffix for float results (`.rn`).
    pub const fn suffix(self) -> &'static str {
        match self {
            Rounding::Rn => ".rn",
            Rounding::Rz => ".rz",
            Rounding::Rm => ".rm",
            Rounding::Rp => ".rp",
        }
    }

    /// Suffix for float → integer conversions (`.rni`).
    pub const fn int_suffix(self) -> &'static str {
        match self {
            Rounding::Rn => ".rni",
            Rounding::Rz => ".rzi",
            Rounding::Rm => ".rmi",
            Rounding::Rp => ".rpi",
        }
    }
}

/// Precision of `rcp` and `sqrt` (and the flush mode of the approximate forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// IEEE correctly rounded to nearest.
    Rn,
    /// Fast approximation.
    Approx,
    /// Fast approximation, subnormals flushed to zero.
    ApproxFtz,
}

impl Precision {
    /// The PTX suffix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Precision::Rn => ".rn",
            Precision::Approx => ".approx",
            Precision::ApproxFtz => ".approx.ftz",
        }
    }
}

/// A branch target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label(pub u32);

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$L{}", self.0)
    }
}
