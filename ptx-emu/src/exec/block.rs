//! One thread block: its warps, shared and local memory, `cp.async` queues and barrier
//! scheduling.
//!
//! Warps run one at a time, each until all its runnable lanes wait at a barrier or exit;
//! then waiting threads are released barrier by barrier. A barrier that can never complete
//! (some thread exited, or waits elsewhere) is an error, never a hang.

use std::collections::VecDeque;

use super::warp::{Env, Lane, Warp, lanes};
use super::{Launched, memops};
use crate::decode::ops::{IntOp, Op, Src};
use crate::error::{AccessKind, EmuError, Site};
use crate::exec::shared::SharedMemory;
use crate::report::Counters;

/// One `cp.async` copy waiting to land in shared memory.
pub(crate) struct PendingCopy {
    pub dst: u64,
    pub len: u32,
    pub data: [u8; 16],
}

#[derive(Default)]
pub(crate) struct CpQueue {
    pub uncommitted: Vec<PendingCopy>,
    pub groups: VecDeque<Vec<PendingCopy>>,
}

pub(crate) struct Block<'a> {
    pub l: &'a Launched<'a>,
    pub env: Env,
    pub warps: Vec<Warp>,
    pub shared: SharedMemory,
    pub local: Vec<u8>,
    pub cp: Vec<CpQueue>,
    pub counters: Counters,
    /// Requested thread count per barrier id (from `bar.sync id, count`).
    bar_count: [Option<u32>; 16],
    nthreads: u32,
    /// Index of the global allocation the last resolved access fell in.
    pub alloc_hint: std::cell::Cell<usize>,
}

impl<'a> Block<'a> {
    pub(crate) fn new(l: &'a Launched<'a>, ctaid: [u32; 3]) -> Block<'a> {
        let [bx, by, bz] = l.block;
        let nthreads = bx * by * bz;
        let nwarps = nthreads.div_ceil(32);
        let warps = (0..nwarps)
            .map(|w| Warp::new(l.kernel.nregs, w * 32, nthreads))
            .collect();
        Block {
            l,
            env: Env {
                ntid: l.block,
                ctaid,
                nctaid: l.grid,
                nwarps,
            },
            warps,
            shared: SharedMemory::new(l.shared_bytes),
            local: vec![0; (l.kernel.local_bytes * nthreads as u64) as usize],
            cp: (0..nthreads).map(|_| CpQueue::default()).collect(),
            counters: Counters::default(),
            bar_count: [None; 16],
            nthreads,
            alloc_hint: std::cell::Cell::new(0),
        }
    }

    #[allow(clippy::unnecessary_box_returns)] // every error variant stores the site boxed
    pub(crate) fn site(&self, pc: u32, thread: u32) -> Box<Site> {
        let info = &self.l.kernel.info[pc as usize];
        Box::new(Site {
            kernel: self.l.kernel.name.clone(),
            line: info.line,
            instruction: info.text.clone(),
            block: self.env.ctaid,
            thread: self.env.tid(thread),
        })
    }

    pub(crate) fn undefined(&self, pc: u32, thread: u32, reason: impl Into<String>) -> EmuError {
        EmuError::Undefined {
            site: self.site(pc, thread),
            reason: reason.into(),
        }
    }

    /// Runs the block to completion.
    pub(crate) fn run(&mut self) -> Result<(), EmuError> {
        let mut steps: u64 = 0;
        loop {
            for w in 0..self.warps.len() {
                while let Some((pc, mask)) = self.warps[w].next() {
                    self.step(w, pc, mask)?;
                    steps += 1;
                    if steps > self.l.step_limit {
                        return Err(EmuError::StepLimit {
                            kernel: self.l.kernel.name.clone(),
                            block: self.env.ctaid,
                            limit: self.l.step_limit,
                        });
                    }
                }
            }
            if !self.release_barriers()? {
                return Ok(());
            }
        }
    }

    /// Releases every barrier whose expected threads all wait. Returns false when no thread
    /// waits (the block is done); errors when threads wait on a barrier that cannot complete.
    fn release_barriers(&mut self) -> Result<bool, EmuError> {
        let mut waiting = [0u32; 16];
        let mut any = false;
        for w in &self.warps {
            for s in &w.lane {
                if let Lane::Bar(id) = s {
                    waiting[*id as usize] += 1;
                    any = true;
                }
            }
        }
        if !any {
            return Ok(false);
        }
        let mut released = false;
        for id in 0..16 {
            let expected = self.bar_count[id].unwrap_or(self.nthreads);
            if waiting[id] > 0 && waiting[id] >= expected {
                for w in &mut self.warps {
                    for s in &mut w.lane {
                        if *s == Lane::Bar(id as u32) {
                            *s = Lane::Run;
                        }
                    }
                }
                self.bar_count[id] = None;
                self.shared.epoch += 1;
                self.counters.barriers += 1;
                released = true;
            }
        }
        if released {
            return Ok(true);
        }
        // Deadlock: name one waiting thread and one that will not come.
        let mut waiter = None;
        let mut missing = None;
        for w in &self.warps {
            for l in 0..32 {
                let t = w.first_thread + l as u32;
                match w.lane[l] {
                    Lane::Bar(id) if waiter.is_none() => waiter = Some((t, id, w.pc[l] - 1)),
                    Lane::Exited if missing.is_none() => {
                        missing = Some((t, "has exited".to_string()));
                    }
                    _ => {}
                }
            }
        }
        let (t, id, pc) = waiter.unwrap_or((0, 0, 0));
        if missing.is_none() {
            for w in &self.warps {
                for l in 0..32 {
                    if let Lane::Bar(other) = w.lane[l]
                        && other != id
                        && missing.is_none()
                    {
                        missing = Some((
                            w.first_thread + l as u32,
                            format!("waits at barrier {other}"),
                        ));
                    }
                }
            }
        }
        let (m, reason) = missing.unwrap_or((t, "never arrives".to_string()));
        Err(EmuError::BarrierNotReached {
            kernel: self.l.kernel.name.clone(),
            block: self.env.ctaid,
            waiting: self.env.tid(t),
            line: self.l.kernel.info[pc as usize].line,
            missing: self.env.tid(m),
            reason,
        })
    }

    /// Executes the instruction at `pc` for the lanes in `active`.
    fn step(&mut self, w: usize, pc: u32, active: u32) -> Result<(), EmuError> {
        let code = &self.l.kernel.code;
        if pc as usize >= code.len() {
            // Falling off the end of the kernel body ends the thread, like `ret`.
            for l in lanes(active) {
                self.warps[w].lane[l] = Lane::Exited;
            }
            return Ok(());
        }
        let ins = &code[pc as usize];
        let mut exec = active;
        if let Some((p, neg)) = ins.guard {
            let warp = &self.warps[w];
            for l in lanes(active) {
                if (warp.regs[p as usize * 32 + l] & 1 != 0) == neg {
                    exec &= !(1 << l);
                }
            }
        }
        self.counters.instructions.add(ins.class);
        self.counters.thread_instructions += exec.count_ones() as u64;
        let mut next_pc_taken = None;
        if exec != 0 {
            match &ins.op {
                Op::Bra { target } => next_pc_taken = Some(*target),
                Op::Exit => {
                    for l in lanes(exec) {
                        self.finish_thread(w, l);
                        self.warps[w].lane[l] = Lane::Exited;
                    }
                }
                Op::Bar { id, count } => {
                    let warp = &self.warps[w];
                    let l0 = exec.trailing_zeros() as usize;
                    let id_v = warp.get(*id, l0, &self.env);
                    if id_v >= 16 {
                        return Err(self.undefined(
                            pc,
                            warp.first_thread + l0 as u32,
                            "barrier id must be below 16",
                        ));
                    }
                    if let Some(c) = count {
                        let c = warp.get(*c, l0, &self.env) as u32;
                        if !c.is_multiple_of(32) || c == 0 {
                            return Err(self.undefined(
                                pc,
                                warp.first_thread + l0 as u32,
                                "barrier thread count must be a non-zero multiple of 32",
                            ));
                        }
                        self.bar_count[id_v as usize] = Some(c);
                    }
                    for l in lanes(exec) {
                        self.warps[w].lane[l] = Lane::Bar(id_v as u32);
                    }
                }
                _ => self.exec(w, pc, exec, &ins.op)?,
            }
        }
        let warp = &mut self.warps[w];
        for l in lanes(active) {
            match next_pc_taken {
                Some(t) if exec & (1 << l) != 0 => warp.pc[l] = t,
                _ => warp.pc[l] = pc + 1,
            }
        }
        Ok(())
    }

    /// Lands a thread's outstanding `cp.async` copies when it exits.
    fn finish_thread(&mut self, w: usize, l: usize) {
        let t = (self.warps[w].first_thread + l as u32) as usize;
        let q = &mut self.cp[t];
        let mut all: Vec<PendingCopy> = q.groups.drain(..).flatten().collect();
        all.append(&mut q.uncommitted);
        for c in all {
            self.shared.bytes[c.dst as usize..(c.dst + c.len as u64) as usize]
                .copy_from_slice(&c.data[..c.len as usize]);
        }
    }

    fn exec(&mut self, w: usize, pc: u32, exec: u32, op: &Op) -> Result<(), EmuError> {
        use super::alu;
        let env = &self.env;
        let warp = &mut self.warps[w];
        match *op {
            Op::Mov { ty, d, a } => {
                for l in lanes(exec) {
                    let v = ty.normalize(warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::Pack {
                part_bits,
                d,
                ref parts,
            } => {
                let m = (1u64 << part_bits) - 1;
                for l in lanes(exec) {
                    let mut v = 0;
                    for (i, p) in parts.iter().enumerate() {
                        v |= (warp.get(*p, l, env) & m) << (i as u32 * part_bits);
                    }
                    warp.set(d, l, v);
                }
            }
            Op::Unpack {
                part_bits,
                ref ds,
                a,
            } => {
                let m = (1u64 << part_bits) - 1;
                for l in lanes(exec) {
                    let v = warp.get(a, l, env);
                    for (i, d) in ds.iter().enumerate() {
                        warp.set(*d, l, (v >> (i as u32 * part_bits)) & m);
                    }
                }
            }
            Op::Int { op, ty, d, a, b }
                if ty.bits() >= 32
                    && matches!(
                        op,
                        IntOp::Add
                            | IntOp::Sub
                            | IntOp::MulLo
                            | IntOp::And
                            | IntOp::Or
                            | IntOp::Xor
                    ) =>
            {
                // Wrapping arithmetic on the low bits, then the type's normalisation, is
                // exactly what these ops define; skip the general i128 path.
                let f = |x: u64, y: u64| match op {
                    IntOp::Add => x.wrapping_add(y),
                    IntOp::Sub => x.wrapping_sub(y),
                    IntOp::MulLo => x.wrapping_mul(y),
                    IntOp::And => x & y,
                    IntOp::Or => x | y,
                    _ => x ^ y,
                };
                for l in lanes(exec) {
                    let v = ty.normalize(f(warp.get(a, l, env), warp.get(b, l, env)));
                    warp.set(d, l, v);
                }
            }
            Op::Int { op, ty, d, a, b } => {
                for l in lanes(exec) {
                    match alu::int_bin(op, ty, warp.get(a, l, env), warp.get(b, l, env)) {
                        Ok(v) => warp.set(d, l, v),
                        Err(why) => {
                            let t = warp.first_thread + l as u32;
                            return Err(self.undefined(pc, t, why));
                        }
                    }
                }
            }
            Op::Mad {
                mode,
                ty,
                d,
                a,
                b,
                c,
            } => {
                for l in lanes(exec) {
                    let r = alu::mad(
                        mode,
                        ty,
                        warp.get(a, l, env),
                        warp.get(b, l, env),
                        warp.get(c, l, env),
                    );
                    match r {
                        Ok(v) => warp.set(d, l, v),
                        Err(why) => {
                            let t = warp.first_thread + l as u32;
                            return Err(self.undefined(pc, t, why));
                        }
                    }
                }
            }
            Op::Float { op, ft, m, d, a, b } => {
                let n = exec.count_ones() as u64 * if ft.packed { 2 } else { 1 };
                self.count_flops(ft.fmt, n);
                let warp = &mut self.warps[w];
                if ft.fmt == crate::types::Fmt::F32
                    && !m.ftz
                    && !m.sat
                    && m.rnd == crate::types::Rnd::Rn
                {
                    // The hot path: f32 round-to-nearest is exactly Rust's f32 arithmetic.
                    let f = |x: f32, y: f32| match op {
                        crate::decode::ops::FloatOp::Add => x + y,
                        crate::decode::ops::FloatOp::Sub => x - y,
                        crate::decode::ops::FloatOp::Mul => x * y,
                        crate::decode::ops::FloatOp::Div => x / y,
                        crate::decode::ops::FloatOp::Min => {
                            if x.is_nan() {
                                y
                            } else if y.is_nan() {
                                x
                            } else {
                                x.min(y)
                            }
                        }
                        crate::decode::ops::FloatOp::Max => {
                            if x.is_nan() {
                                y
                            } else if y.is_nan() {
                                x
                            } else {
                                x.max(y)
                            }
                        }
                    };
                    for l in lanes(exec) {
                        let x = f32::from_bits(warp.get(a, l, &self.env) as u32);
                        let y = f32::from_bits(warp.get(b, l, &self.env) as u32);
                        warp.set(d, l, canon_f32(f(x, y)));
                    }
                } else {
                    for l in lanes(exec) {
                        let v = alu::float_bin(
                            op,
                            ft,
                            m,
                            warp.get(a, l, &self.env),
                            warp.get(b, l, &self.env),
                        );
                        warp.set(d, l, v);
                    }
                }
            }
            Op::Fma { ft, m, d, a, b, c } => {
                let n = exec.count_ones() as u64 * if ft.packed { 4 } else { 2 };
                self.count_flops(ft.fmt, n);
                let warp = &mut self.warps[w];
                if ft.fmt == crate::types::Fmt::F32
                    && !m.ftz
                    && !m.sat
                    && m.rnd == crate::types::Rnd::Rn
                {
                    for l in lanes(exec) {
                        let x = f32::from_bits(warp.get(a, l, &self.env) as u32);
                        let y = f32::from_bits(warp.get(b, l, &self.env) as u32);
                        let z = f32::from_bits(warp.get(c, l, &self.env) as u32);
                        warp.set(d, l, canon_f32(x.mul_add(y, z)));
                    }
                } else {
                    for l in lanes(exec) {
                        let v = alu::fma(
                            ft,
                            m,
                            warp.get(a, l, &self.env),
                            warp.get(b, l, &self.env),
                            warp.get(c, l, &self.env),
                        );
                        warp.set(d, l, v);
                    }
                }
            }
            Op::Lop3 { d, a, b, c, lut } => {
                for l in lanes(exec) {
                    let v = alu::lop3(
                        warp.get(a, l, env),
                        warp.get(b, l, env),
                        warp.get(c, l, env),
                        lut,
                    );
                    warp.set(d, l, v);
                }
            }
            Op::Bfe { ty, d, a, pos, len } => {
                for l in lanes(exec) {
                    let v = alu::bfe(
                        ty,
                        warp.get(a, l, env),
                        warp.get(pos, l, env),
                        warp.get(len, l, env),
                    );
                    warp.set(d, l, v);
                }
            }
            Op::Bfi {
                ty,
                d,
                f,
                base,
                pos,
                len,
            } => {
                for l in lanes(exec) {
                    let v = alu::bfi(
                        ty,
                        warp.get(f, l, env),
                        warp.get(base, l, env),
                        warp.get(pos, l, env),
                        warp.get(len, l, env),
                    );
                    warp.set(d, l, v);
                }
            }
            Op::Prmt { d, a, b, c } => {
                for l in lanes(exec) {
                    let v = alu::prmt(
                        warp.get(a, l, env),
                        warp.get(b, l, env),
                        warp.get(c, l, env),
                    );
                    warp.set(d, l, v);
                }
            }
            Op::IntUn { op, ty, d, a } => {
                for l in lanes(exec) {
                    let v = alu::int_un(op, ty, warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::FloatUn { op, ft, m, d, a } => {
                for l in lanes(exec) {
                    let v = alu::float_un(op, ft, m, warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::Setp {
                cmp,
                ty,
                d,
                d2,
                a,
                b,
                comb,
            } => {
                for l in lanes(exec) {
                    let mut t = alu::setp(cmp, ty, warp.get(a, l, env), warp.get(b, l, env));
                    let mut f = !t;
                    if let Some((bo, c, neg)) = comb {
                        let cv = (warp.get(c, l, env) & 1 != 0) != neg;
                        t = alu::combine(bo, t, cv);
                        f = alu::combine(bo, f, cv);
                    }
                    warp.set(d, l, u64::from(t));
                    if let Some(d2) = d2 {
                        warp.set(d2, l, u64::from(f));
                    }
                }
            }
            Op::Selp { ty, d, a, b, p } => {
                for l in lanes(exec) {
                    let v = if warp.get(p, l, env) & 1 != 0 {
                        warp.get(a, l, env)
                    } else {
                        warp.get(b, l, env)
                    };
                    warp.set(d, l, ty.normalize(v));
                }
            }
            Op::Cvt {
                dst,
                src,
                rnd,
                irnd,
                sat,
                ftz,
                d,
                a,
            } => {
                for l in lanes(exec) {
                    let v = alu::cvt(dst, src, rnd, irnd, sat, ftz, warp.get(a, l, env));
                    warp.set(d, l, v);
                }
            }
            Op::CvtPack {
                fmt,
                rnd,
                sat,
                d,
                a,
                b,
            } => {
                let to = |v: u64| {
                    let x = f32::from_bits(v as u32) as f64;
                    let r = fmt.round(x, 0.0, rnd);
                    if sat {
                        let y = fmt.to_f64(r);
                        if y.is_nan() || y <= 0.0 {
                            0
                        } else if y >= 1.0 {
                            fmt.round(1.0, 0.0, crate::types::Rnd::Rn)
                        } else {
                            r
                        }
                    } else {
                        r
                    }
                };
                for l in lanes(exec) {
                    let hi = to(warp.get(a, l, env));
                    let lo = to(warp.get(b, l, env));
                    warp.set(d, l, (hi << 16) | lo);
                }
            }
            Op::Cvta {
                to_generic,
                space,
                d,
                a,
            } => {
                use crate::decode::ops::Space;
                use crate::memory_map::{LOCAL_WINDOW, SHARED_WINDOW};
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                for l in lanes(exec) {
                    let v = warp.get(a, l, env);
                    let r = if to_generic {
                        v.wrapping_add(window)
                    } else {
                        v.wrapping_sub(window)
                    };
                    warp.set(d, l, r);
                }
            }
            Op::Ld { .. } | Op::St { .. } | Op::Atom { .. } | Op::CpAsync { .. } => {
                memops::exec_mem(self, w, pc, exec, op)?;
            }
            Op::CpAsyncCommit => {
                for l in lanes(exec) {
                    let t = (self.warps[w].first_thread + l as u32) as usize;
                    let q = &mut self.cp[t];
                    let g = std::mem::take(&mut q.uncommitted);
                    q.groups.push_back(g);
                }
            }
            Op::CpAsyncWait { n, all } => {
                for l in lanes(exec) {
                    let t = self.warps[w].first_thread + l as u32;
                    self.cp_wait(pc, t, n, all)?;
                }
            }
            Op::Fence => {}
            Op::Shfl { .. }
            | Op::Vote { .. }
            | Op::ActiveMask { .. }
            | Op::Mma { .. }
            | Op::Ldmatrix { .. } => {
                super::collective::exec_collective(self, w, pc, exec, op)?;
            }
            Op::Bra { .. } | Op::Exit | Op::Bar { .. } => unreachable!("handled in step"),
        }
        Ok(())
    }

    fn count_flops(&mut self, fmt: crate::types::Fmt, n: u64) {
        if matches!(fmt, crate::types::Fmt::F16 | crate::types::Fmt::Bf16) {
            self.counters.fp16_flops += n;
        } else {
            self.counters.fp32_flops += n;
        }
    }

    /// `cp.async.wait_group n` for thread `t`; `wait_all` commits the uncommitted copies
    /// first. Copies land in shared memory only here (or at thread exit), so reading the
    /// destination before waiting sees the old bytes, as on hardware.
    fn cp_wait(&mut self, pc: u32, t: u32, n: u32, all: bool) -> Result<(), EmuError> {
        let q = &mut self.cp[t as usize];
        if all && !q.uncommitted.is_empty() {
            let g = std::mem::take(&mut q.uncommitted);
            q.groups.push_back(g);
        }
        while self.cp[t as usize].groups.len() > n as usize {
            let g = self.cp[t as usize].groups.pop_front().unwrap_or_default();
            for c in g {
                if let Err(r) = self.shared.track(c.dst, c.len, t, AccessKind::Write) {
                    return Err(self.race(pc, t, &r, AccessKind::Write));
                }
                self.shared.bytes[c.dst as usize..(c.dst + c.len as u64) as usize]
                    .copy_from_slice(&c.data[..c.len as usize]);
            }
        }
        Ok(())
    }

    pub(crate) fn race(
        &self,
        pc: u32,
        t: u32,
        r: &super::shared::Race,
        kind: AccessKind,
    ) -> EmuError {
        let other_thread = if r.other_thread == super::shared::MANY_READERS {
            [u32::MAX; 3]
        } else {
            self.env.tid(r.other_thread)
        };
        EmuError::SharedRace {
            site: self.site(pc, t),
            offset: r.offset,
            kind,
            other_kind: r.other,
            other_thread,
        }
    }

    /// The value of a source in lane `l` of warp `w` (for the memory and collective code).
    #[inline]
    pub(crate) fn val(&self, w: usize, s: Src, l: usize) -> u64 {
        self.warps[w].get(s, l, &self.env)
    }
}

/// PTX produces the canonical NaN for NaN results of f32 arithmetic.
#[inline]
fn canon_f32(x: f32) -> u64 {
    if x.is_nan() {
        0x7fff_ffff
    } else {
        x.to_bits() as u64
    }
}
