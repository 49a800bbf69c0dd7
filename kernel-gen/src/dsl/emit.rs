//! The emitter: a 1:1 table from (legalised) ops to PTX text, plus the module frame
//! (`.version`, `.target`, shared arrays, signature, register ranges).

use std::fmt::Write as _;

use super::kernel::Kernel;
use super::legalise;
use super::ops::{BinOp, Instr, Op, UnOp};
use super::types::{Operand, Reg, Ty};

impl Kernel {
    /// Legalise, then emit the module text.
    pub fn to_ptx(&self) -> String {
        emit(&legalise::legalise(self.clone()))
    }
}

/// Type suffix of `mov`, `ld`, `st`: 16-bit floats and packed pairs move as bits.
fn move_suffix(ty: Ty) -> &'static str {
    match ty {
        Ty::F16 | Ty::Bf16 => ".b16",
        Ty::F16x2 | Ty::Bf16x2 => ".b32",
        other => other.suffix(),
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let inner: Vec<String> = items.iter().map(ToString::to_string).collect();
    if items.len() == 1 {
        inner[0].clone()
    } else {
        format!("{{{}}}", inner.join(", "))
    }
}

/// `{a, b, …}` even for one register (vector operands of the warp collectives).
fn braced(regs: &[Reg]) -> String {
    let inner: Vec<String> = regs.iter().map(ToString::to_string).collect();
    format!("{{{}}}", inner.join(", "))
}

fn vec_suffix(n: usize) -> String {
    if n == 1 {
        String::new()
    } else {
        format!(".v{n}")
    }
}

/// The text of one op (without guard, indentation or `;`), or `None` for labels/comments.
pub fn op_text(op: &Op) -> String {
    match op {
        Op::Comment(t) => format!("// {t}"),
        Op::Label(l) => format!("{l}:"),
        Op::Mov { dst, src } => format!("mov{} {dst}, {src}", move_suffix(dst.ty)),
        Op::MovSymbol { dst, symbol } => format!("mov.u32 {dst}, {symbol}"),
        Op::LdParam { dst, param } => format!("ld.param{} {dst}, [{param}]", dst.ty.suffix()),
        Op::CvtaToGlobal { dst, src } => format!("cvta.to.global.u64 {dst}, {src}"),
        Op::Bin {
            op,
            ty,
            rnd,
            dst,
            a,
            b,
        } => {
            let ty_suffix = match op {
                BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Shl => ty.bit_suffix(),
                _ => ty.suffix(),
            };
            let rnd = rnd.map_or("", |r| r.suffix());
            format!("{}{rnd}{ty_suffix} {dst}, {a}, {b}", op.name())
        }
        Op::IntMul {
            mode,
            ty,
            dst,
            a,
            b,
        } => {
            format!("mul{}{} {dst}, {a}, {b}", mode.suffix(), ty.suffix())
        }
        Op::IntMad {
            mode,
            ty,
            dst,
            a,
            b,
            c,
        } => {
            format!("mad{}{} {dst}, {a}, {b}, {c}", mode.suffix(), ty.suffix())
        }
        Op::Fma {
            rnd,
            ty,
            dst,
            a,
            b,
            c,
        } => {
            format!("fma{}{} {dst}, {a}, {b}, {c}", rnd.suffix(), ty.suffix())
        }
        Op::Un { op, ty, dst, a } => {
            let ftz = |f: &bool| if *f { ".ftz" } else { "" };
            let head = match op {
                UnOp::Neg => format!("neg{}", ty.suffix()),
                UnOp::Abs => format!("abs{}", ty.suffix()),
                UnOp::Not => format!("not{}", ty.bit_suffix()),
                UnOp::Ex2 { ftz: f } => format!("ex2.approx{}{}", ftz(f), ty.suffix()),
                UnOp::Lg2 { ftz: f } => format!("lg2.approx{}{}", ftz(f), ty.suffix()),
                UnOp::Rcp(p) => format!("rcp{}{}", p.suffix(), ty.suffix()),
                UnOp::Rsqrt { ftz: f } => format!("rsqrt.approx{}{}", ftz(f), ty.suffix()),
                UnOp::Sqrt(p) => format!("sqrt{}{}", p.suffix(), ty.suffix()),
            };
            format!("{head} {dst}, {a}")
        }
        Op::Setp { cmp, ty, dst, a, b } => {
            format!("setp{}{} {dst}, {a}, {b}", cmp.suffix(), ty.suffix())
        }
        Op::Selp { ty, dst, a, b, p } => format!("selp{} {dst}, {a}, {b}, {p}", ty.suffix()),
        Op::Cvt { dst, src, rnd, sat } => {
            let rnd = match rnd {
                None => "",
                Some(r) if dst.ty.is_float() => r.suffix(),
                Some(r) => r.int_suffix(),
            };
            let sat = if *sat { ".sat" } else { "" };
            format!(
                "cvt{rnd}{sat}{}{} {dst}, {src}",
                dst.ty.suffix(),
                src.ty.suffix()
            )
        }
        Op::CvtPack { dst, hi, lo } => format!("cvt.rn{}.f32 {dst}, {hi}, {lo}", dst.ty.suffix()),
        Op::Pack { dst, lo, hi } => format!("mov.b32 {dst}, {{{lo}, {hi}}}"),
        Op::Unpack { lo, hi, src } => format!("mov.b32 {{{lo}, {hi}}}, {src}"),
        Op::Ld { space, dsts, addr } => format!(
            "ld{}{}{} {}, {addr}",
            space.suffix(),
            vec_suffix(dsts.len()),
            move_suffix(dsts[0].ty),
            list::<Reg>(dsts)
        ),
        Op::St {
            space,
            ty,
            srcs,
            addr,
        } => format!(
            "st{}{}{} {addr}, {}",
            space.suffix(),
            vec_suffix(srcs.len()),
            move_suffix(*ty),
            list::<Operand>(srcs)
        ),
        Op::BarSync { id } => format!("bar.sync {id}"),
        Op::WarpShfl {
            mode,
            dst,
            a,
            b,
            c,
            mask,
        } => {
            format!(
                "shfl.sync{}.b32 {dst}, {a}, {b}, {c}, 0x{mask:08x}",
                mode.suffix()
            )
        }
        Op::WarpMma { ab, d, a, b, c } => format!(
            "mma.sync.aligned.m16n8k16.row.col.f32{t}{t}.f32 {}, {}, {}, {}",
            braced(d),
            braced(a),
            braced(b),
            braced(c),
            t = ab.suffix()
        ),
        Op::WarpLdmatrix { trans, dsts, addr } => format!(
            "ldmatrix.sync.aligned.m8n8.x{}{}.shared.b16 {}, {addr}",
            dsts.len(),
            if *trans { ".trans" } else { "" },
            braced(dsts)
        ),
        Op::CpAsync {
            cg,
            bytes,
            dst,
            src,
            src_bytes,
        } => {
            let tail = src_bytes.map_or(String::new(), |s| format!(", {s}"));
            format!(
                "cp.async.{}.shared.global {dst}, {src}, {bytes}{tail}",
                if *cg { "cg" } else { "ca" }
            )
        }
        Op::CpAsyncCommit => "cp.async.commit_group".into(),
        Op::CpAsyncWait { pending } => format!("cp.async.wait_group {pending}"),
        Op::Bra { target, uni } => format!("bra{} {target}", if *uni { ".uni" } else { "" }),
        Op::Ret => "ret".into(),
    }
}

/// One line of the body: guard, text and terminator.
pub fn instr_line(instr: &Instr) -> String {
    let text = op_text(&instr.op);
    match &instr.op {
        Op::Label(_) => text,
        Op::Comment(_) => format!("\t{text}"),
        _ => {
            let guard = instr.guard.map_or(String::new(), |g| {
                format!("@{}{} ", if g.negate { "!" } else { "" }, g.pred)
            });
            format!("\t{guard}{text};")
        }
    }
}

/// The whole module.
pub fn emit(kernel: &Kernel) -> String {
    let mut s = String::new();
    s.push_str("//\n");
    for line in &kernel.header {
        let _ = writeln!(s, "// {line}");
    }
    s.push_str("//\n");
    let _ = writeln!(s, ".version {}", kernel.arch.ptx_version());
    let _ = writeln!(s, ".target {}", kernel.arch.name());
    s.push_str(".address_size 64\n\n");
    for a in &kernel.shared {
        let _ = writeln!(s, "// {}: {} bytes, {}", a.name, a.bytes, a.comment);
        let _ = writeln!(s, ".shared .align {} .b8 {}[{}];", a.align, a.name, a.bytes);
    }
    if let Some(d) = &kernel.dynamic_shared {
        let _ = writeln!(
            s,
            "// {}: {} bytes at launch, {}",
            d.name, d.bytes, d.comment
        );
        let _ = writeln!(s, ".extern .shared .align {} .b8 {}[];", d.align, d.name);
    }
    if !kernel.shared.is_empty() || kernel.dynamic_shared.is_some() {
        s.push('\n');
    }
    let _ = writeln!(s, ".visible .entry {}(", kernel.name);
    let params: Vec<String> = kernel
        .params
        .iter()
        .map(|p| format!("\t.param {} {}", p.ty.suffix(), p.name))
        .collect();
    s.push_str(&params.join(",\n"));
    s.push_str("\n)\n");
    if let Some(n) = kernel.max_threads {
        let _ = writeln!(s, ".maxntid {n}, 1, 1");
    }
    if let Some(n) = kernel.min_ctas_per_sm {
        let _ = writeln!(s, ".minnctapersm {n}");
    }
    s.push_str("{\n");
    for ty in Ty::ALL {
        let n = kernel.reg_counts[ty.index()];
        if n > 0 {
            let _ = writeln!(s, "\t.reg {} {}<{n}>;", ty.decl(), ty.prefix());
        }
    }
    s.push('\n');
    for instr in &kernel.instrs {
        s.push_str(&instr_line(instr));
        s.push('\n');
    }
    s.push_str("}\n");
    s
}
