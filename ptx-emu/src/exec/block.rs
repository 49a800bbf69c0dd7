//! One thread block: its warps, shared and local memory, `cp.async` queues and barrier
//! scheduling.
//!
//! Warps run one at a time, each until all its runnable lanes wait at a barrier or exit;
//! then waiting threads are released barrier by barrier. A barrier that can never complete
//! (some thread exited, or waits elsewhere) is an error, never a hang.

use std::collections::VecDeque;

use super::Launched;
use super::warp::{Env, Lane, Warp, lanes};
use crate::decode::ops::{Class, Op, Src};
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

    /// The time model's scoreboard: an instruction reading a register that a global load
    /// wrote and nothing has waited on yet is one round trip the warp waits for (all loads
    /// issued before it are taken to land together); then the load's own destinations
    /// become pending.
    fn scoreboard(&mut self, w: usize, pc: u32) {
        let ins = &self.l.kernel.code[pc as usize];
        let warp = &mut self.warps[w];
        if warp.npending > 0 && ins.reads.iter().any(|&r| warp.pending[r as usize]) {
            self.counters.load_waits += 1;
            warp.waits += 1;
            warp.pending.iter_mut().for_each(|p| *p = false);
            warp.npending = 0;
        }
        for &r in &ins.loads {
            if !warp.pending[r as usize] {
                warp.pending[r as usize] = true;
                warp.npending += 1;
            }
        }
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
        // Warp w issues from sub-partition w mod 4 (the time model's per-scheduler load).
        self.counters.subpartition_instructions[w % 4] += 1;
        if ins.class == Class::Mma {
            self.counters.subpartition_mma[w % 4] += 1;
        }
        if matches!(ins.op, Op::CpAsyncWait { .. }) {
            self.counters.async_waits += 1;
            self.warps[w].waits += 1;
        }
        if exec != 0 {
            self.scoreboard(w, pc);
        }
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

    /// `cp.async.wait_group n` for thread `t`; `wait_all` commits the uncommitted copies
    /// first. Copies land in shared memory only here (or at thread exit), so reading the
    /// destination before waiting sees the old bytes, as on hardware.
    pub(crate) fn cp_wait(&mut self, pc: u32, t: u32, n: u32, all: bool) -> Result<(), EmuError> {
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
