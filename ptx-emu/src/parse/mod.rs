//! The PTX subset parser: module directives, `.entry` kernels, their declarations and
//! statements, into a raw syntax tree that [`crate::decode`] resolves.
//!
//! Grammar accepted (PTX ISA 8.x as emitted by compilers and kernel generators):
//! `.version`, `.target`, `.address_size`; `[.visible|.weak] .entry name(.param … , …)` with
//! optional performance directives (`.maxntid`, `.reqntid`, `.minnctapersm`, `.maxnreg`); in
//! bodies `.reg` (lists and `%r<N>` ranges), `.shared`/`.local` arrays (with `.align`, and
//! `.extern .shared name[]` for dynamic shared memory), nested `{ }` scopes, labels,
//! `@%p`/`@!%p` guards, and instructions whose operands are registers, immediates, vectors
//! `{a, b}`, addresses `[base+off]` and `a|b` pairs. Anything else is an error.

pub(crate) mod lexer;

use crate::EmuError;
use crate::types::Ty;
use lexer::{Tok, Token, parse_float, parse_int};

/// An immediate as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Imm {
    /// An integer (negative values are stored two's complement).
    Int(u64),
    /// `0fXXXXXXXX`.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX` or a decimal float.
    F64(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    /// A register, special register, label or variable name.
    Name(String),
    /// `!%p` (setp combining predicate).
    NotName(String),
    Imm(Imm),
    /// `{a, b, …}`.
    Vector(Vec<Operand>),
    /// `[base + offset]`; `base` is `None` for an absolute address.
    Addr {
        base: Option<String>,
        offset: i64,
    },
    /// `%p|%q` (two destinations).
    Pair(String, String),
}

#[derive(Debug, Clone)]
pub(crate) struct RawInstr {
    pub line: usize,
    pub text: String,
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<Operand>,
}

#[derive(Debug, Clone)]
pub(crate) enum Stmt {
    Label(String, usize),
    Instr(RawInstr),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarSpace {
    Shared,
    Local,
}

#[derive(Debug, Clone)]
pub(crate) struct VarDecl {
    pub space: VarSpace,
    pub name: String,
    pub align: u32,
    pub elem: Ty,
    /// `None` for `.extern .shared x[]` (dynamic shared memory).
    pub count: Option<u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct ParamDecl {
    pub name: String,
    pub ty: Ty,
    pub align: u32,
    pub count: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct RawKernel {
    pub name: String,
    pub params: Vec<ParamDecl>,
    pub regs: Vec<(Ty, String, usize)>,
    pub vars: Vec<VarDecl>,
    pub body: Vec<Stmt>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RawModule {
    pub version: Option<String>,
    pub target: Vec<String>,
    pub address_size: Option<u64>,
    pub shared: Vec<VarDecl>,
    pub kernels: Vec<RawKernel>,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
}

fn err(line: usize, message: impl Into<String>) -> EmuError {
    EmuError::Parse {
        line,
        message: message.into(),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(1, |t| t.line)
    }

    fn next(&mut self) -> Result<Token, EmuError> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or_else(|| err(self.line(), "unexpected end of input"))?;
        self.pos += 1;
        Ok(t)
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn expect_punct(&mut self, c: char) -> Result<(), EmuError> {
        let t = self.next()?;
        if t.tok == Tok::Punct(c) {
            Ok(())
        } else {
            Err(err(t.line, format!("expected `{c}`, found {:?}", t.tok)))
        }
    }

    fn ident(&mut self) -> Result<(String, usize), EmuError> {
        let t = self.next()?;
        match t.tok {
            Tok::Ident(s) => Ok((s, t.line)),
            other => Err(err(t.line, format!("expected a name, found {other:?}"))),
        }
    }

    fn int(&mut self) -> Result<u64, EmuError> {
        let t = self.next()?;
        match &t.tok {
            Tok::Num(s) => parse_int(s).ok_or_else(|| err(t.line, format!("bad integer `{s}`"))),
            other => Err(err(t.line, format!("expected an integer, found {other:?}"))),
        }
    }

    fn skip_line(&mut self, line: usize) {
        while self.toks.get(self.pos).is_some_and(|t| t.line == line) {
            self.pos += 1;
        }
    }

    fn module(&mut self) -> Result<RawModule, EmuError> {
        let mut m = RawModule::default();
        while let Some(tok) = self.peek().cloned() {
            let line = self.line();
            let Tok::Ident(word) = tok else {
                return Err(err(line, format!("unexpected {tok:?} at module level")));
            };
            match word.as_str() {
                ".version" => {
                    self.pos += 1;
                    let t = self.next()?;
                    if let Tok::Num(v) = t.tok {
                        m.version = Some(v);
                    } else {
                        return Err(err(line, ".version needs a number"));
                    }
                }
                ".target" => {
                    self.pos += 1;
                    m.target.push(self.ident()?.0);
                    while self.is_punct(',') {
                        self.pos += 1;
                        m.target.push(self.ident()?.0);
                    }
                }
                ".address_size" => {
                    self.pos += 1;
                    m.address_size = Some(self.int()?);
                }
                ".file" | ".loc" | ".section" => self.skip_line(line),
                ".visible" | ".weak" => self.pos += 1,
                ".entry" => {
                    self.pos += 1;
                    m.kernels.push(self.kernel()?);
                }
                ".extern" | ".shared" => {
                    let v = self.var_decl()?;
                    if v.space != VarSpace::Shared {
                        return Err(EmuError::Unsupported {
                            line,
                            instruction: word,
                            reason: "only .shared variables are supported at module level".into(),
                        });
                    }
                    m.shared.push(v);
                }
                _ => {
                    return Err(EmuError::Unsupported {
                        line,
                        instruction: word.clone(),
                        reason: "module-level directive not supported (only .version, .target, \
                                 .address_size, .entry and .shared)"
                            .into(),
                    });
                }
            }
        }
        Ok(m)
    }

    fn kernel(&mut self) -> Result<RawKernel, EmuError> {
        let (name, _) = self.ident()?;
        let mut params = Vec::new();
        if self.is_punct('(') {
            self.pos += 1;
            while !self.is_punct(')') {
                params.push(self.param()?);
                if self.is_punct(',') {
                    self.pos += 1;
                }
            }
            self.expect_punct(')')?;
        }
        // Performance directives before the body.
        while let Some(Tok::Ident(d)) = self.peek().cloned() {
            match d.as_str() {
                ".maxntid" | ".reqntid" | ".minnctapersm" | ".maxnreg" | ".noreturn"
                | ".maxclusterrank" | ".reqnctapercluster" => {
                    self.pos += 1;
                    while matches!(self.peek(), Some(Tok::Num(_))) {
                        self.pos += 1;
                        if self.is_punct(',') {
                            self.pos += 1;
                        }
                    }
                }
                _ => {
                    return Err(err(
                        self.line(),
                        format!("unexpected `{d}` before kernel body"),
                    ));
                }
            }
        }
        self.expect_punct('{')?;
        let mut k = RawKernel {
            name,
            params,
            regs: Vec::new(),
            vars: Vec::new(),
            body: Vec::new(),
        };
        self.body(&mut k)?;
        Ok(k)
    }

    fn param(&mut self) -> Result<ParamDecl, EmuError> {
        let (d, line) = self.ident()?;
        if d != ".param" {
            return Err(err(line, format!("expected .param, found `{d}`")));
        }
        let mut ty = None;
        let mut align = 0;
        loop {
            let (w, line) = self.ident()?;
            if w == ".align" {
                align = self.int()? as u32;
            } else if w == ".ptr" || w.starts_with(".ptr.") || w == ".global" || w == ".shared" {
                // `.ptr.global.align 16` attribute forms.
                if let Some(rest) = w.strip_suffix(".align") {
                    let _ = rest;
                    align = self.int()? as u32;
                }
            } else if let Some(t) = w.strip_prefix('.').and_then(Ty::parse) {
                ty = Some(t);
            } else {
                let ty = ty.ok_or_else(|| err(line, format!("param `{w}` has no type")))?;
                let mut count = 1;
                if self.is_punct('[') {
                    self.pos += 1;
                    count = self.int()?;
                    self.expect_punct(']')?;
                }
                let align = if align == 0 { ty.bytes() } else { align };
                return Ok(ParamDecl {
                    name: w,
                    ty,
                    align,
                    count,
                });
            }
        }
    }

    fn var_decl(&mut self) -> Result<VarDecl, EmuError> {
        let mut ext = false;
        let mut space = None;
        let mut align = 0;
        let mut elem = None;
        loop {
            let (w, line) = self.ident()?;
            match w.as_str() {
                ".extern" => ext = true,
                ".shared" | ".shared::cta" => space = Some(VarSpace::Shared),
                ".local" => space = Some(VarSpace::Local),
                ".align" => align = self.int()? as u32,
                _ => {
                    if let Some(t) = w.strip_prefix('.').and_then(Ty::parse) {
                        elem = Some(t);
                        continue;
                    }
                    let space = space.ok_or_else(|| err(line, "variable without a state space"))?;
                    let elem =
                        elem.ok_or_else(|| err(line, format!("variable `{w}` has no type")))?;
                    let mut count = Some(1);
                    if self.is_punct('[') {
                        self.pos += 1;
                        if self.is_punct(']') {
                            count = None;
                        } else {
                            count = Some(self.int()?);
                        }
                        self.expect_punct(']')?;
                    }
                    if count.is_none() && !(ext && space == VarSpace::Shared) {
                        return Err(err(line, format!("`{w}[]` needs .extern .shared")));
                    }
                    if self.is_punct('=') {
                        return Err(EmuError::Unsupported {
                            line,
                            instruction: w,
                            reason: "initialised variables are not supported".into(),
                        });
                    }
                    self.expect_punct(';')?;
                    let align = if align == 0 { elem.bytes() } else { align };
                    return Ok(VarDecl {
                        space,
                        name: w,
                        align,
                        elem,
                        count,
                    });
                }
            }
        }
    }

    fn body(&mut self, k: &mut RawKernel) -> Result<(), EmuError> {
        let mut depth = 1;
        loop {
            let line = self.line();
            let t = self.next()?;
            match t.tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Tok::Punct('@') => {
                    let neg = if self.is_punct('!') {
                        self.pos += 1;
                        true
                    } else {
                        false
                    };
                    let (p, _) = self.ident()?;
                    let (op, _) = self.ident()?;
                    let instr = self.instr(t.start, line, Some((p, neg)), op)?;
                    k.body.push(Stmt::Instr(instr));
                }
                Tok::Ident(w) => {
                    if self.is_punct(':') {
                        self.pos += 1;
                        k.body.push(Stmt::Label(w, line));
                        continue;
                    }
                    match w.as_str() {
                        ".reg" => self.reg_decl(k, line)?,
                        ".shared" | ".local" | ".extern" => {
                            self.pos -= 1;
                            let v = self.var_decl()?;
                            k.vars.push(v);
                        }
                        ".pragma" => {
                            while !self.is_punct(';') {
                                self.next()?;
                            }
                            self.pos += 1;
                        }
                        ".loc" | ".file" => self.skip_line(line),
                        _ if w.starts_with('.') => {
                            return Err(EmuError::Unsupported {
                                line,
                                instruction: w,
                                reason: "directive not supported inside a kernel".into(),
                            });
                        }
                        _ => {
                            let instr = self.instr(t.start, line, None, w)?;
                            k.body.push(Stmt::Instr(instr));
                        }
                    }
                }
                other => return Err(err(line, format!("unexpected {other:?} in kernel body"))),
            }
        }
    }

    fn reg_decl(&mut self, k: &mut RawKernel, line: usize) -> Result<(), EmuError> {
        let mut ty = None;
        while let Some(Tok::Ident(w)) = self.peek().cloned() {
            if w == ".v2" || w == ".v4" {
                return Err(EmuError::Unsupported {
                    line,
                    instruction: ".reg".into(),
                    reason: "vector registers are not supported".into(),
                });
            }
            match w.strip_prefix('.').and_then(Ty::parse) {
                Some(t) => {
                    ty = Some(t);
                    self.pos += 1;
                }
                None => break,
            }
        }
        let ty = ty.ok_or_else(|| err(line, ".reg without a type"))?;
        loop {
            let (name, _) = self.ident()?;
            if self.is_punct('<') {
                self.pos += 1;
                let n = self.int()?;
                self.expect_punct('>')?;
                if n > crate::decode::MAX_REGISTERS as u64 {
                    return Err(EmuError::Unsupported {
                        line,
                        instruction: format!("{name}<{n}>"),
                        reason: format!(
                            "register range larger than the {} registers the emulator supports",
                            crate::decode::MAX_REGISTERS
                        ),
                    });
                }
                for i in 0..n {
                    k.regs.push((ty, format!("{name}{i}"), line));
                }
            } else {
                k.regs.push((ty, name, line));
            }
            if self.is_punct(',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        self.expect_punct(';')
    }

    fn instr(
        &mut self,
        start: usize,
        line: usize,
        guard: Option<(String, bool)>,
        opcode: String,
    ) -> Result<RawInstr, EmuError> {
        let mut operands = Vec::new();
        if !self.is_punct(';') {
            loop {
                operands.push(self.operand()?);
                if self.is_punct(',') {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        let end_tok = self.next()?;
        if end_tok.tok != Tok::Punct(';') {
            return Err(err(
                end_tok.line,
                format!(
                    "expected `;` after `{opcode}` operands, found {:?}",
                    end_tok.tok
                ),
            ));
        }
        let text = self.src[start..end_tok.end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Ok(RawInstr {
            line,
            text,
            guard,
            opcode,
            operands,
        })
    }

    fn operand(&mut self) -> Result<Operand, EmuError> {
        let t = self.next()?;
        match t.tok {
            Tok::Punct('{') => {
                let mut v = Vec::new();
                loop {
                    v.push(self.operand()?);
                    if self.is_punct(',') {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                self.expect_punct('}')?;
                Ok(Operand::Vector(v))
            }
            Tok::Punct('[') => {
                let mut base = None;
                let mut offset: i64 = 0;
                match self.next()? {
                    Token {
                        tok: Tok::Ident(n), ..
                    } => base = Some(n),
                    Token {
                        tok: Tok::Num(s),
                        line,
                        ..
                    } => {
                        offset = parse_int(&s)
                            .ok_or_else(|| err(line, format!("bad address `{s}`")))?
                            as i64;
                    }
                    other => return Err(err(other.line, format!("bad address {:?}", other.tok))),
                }
                while self.is_punct('+') || self.is_punct('-') {
                    let neg = self.is_punct('-');
                    self.pos += 1;
                    let neg = if self.is_punct('-') {
                        self.pos += 1;
                        !neg
                    } else {
                        neg
                    };
                    let v = self.int()? as i64;
                    offset = if neg { offset - v } else { offset + v };
                }
                self.expect_punct(']')?;
                Ok(Operand::Addr { base, offset })
            }
            Tok::Punct('-') => match self.operand()? {
                Operand::Imm(Imm::Int(v)) => Ok(Operand::Imm(Imm::Int(v.wrapping_neg()))),
                Operand::Imm(Imm::F64(b)) => Ok(Operand::Imm(Imm::F64(b ^ (1 << 63)))),
                Operand::Imm(Imm::F32(b)) => Ok(Operand::Imm(Imm::F32(b ^ (1 << 31)))),
                _ => Err(err(t.line, "`-` must precede a number")),
            },
            Tok::Punct('!') => Ok(Operand::NotName(self.ident()?.0)),
            Tok::Num(s) => {
                if let Some((bits, wide)) = parse_float(&s) {
                    Ok(Operand::Imm(if wide {
                        Imm::F64(bits)
                    } else {
                        Imm::F32(bits as u32)
                    }))
                } else {
                    parse_int(&s)
                        .map(|v| Operand::Imm(Imm::Int(v)))
                        .ok_or_else(|| err(t.line, format!("bad number `{s}`")))
                }
            }
            Tok::Ident(n) => {
                if self.is_punct('|') {
                    self.pos += 1;
                    let (m, _) = self.ident()?;
                    return Ok(Operand::Pair(n, m));
                }
                Ok(Operand::Name(n))
            }
            other => Err(err(t.line, format!("unexpected {other:?} in operands"))),
        }
    }
}

/// Parses PTX text into the raw module tree.
pub(crate) fn parse_module(src: &str) -> Result<RawModule, EmuError> {
    let toks = lexer::lex(src)?;
    let mut p = Parser { src, toks, pos: 0 };
    p.module()
}
