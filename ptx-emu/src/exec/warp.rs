//! A warp's register file and lane states.
//!
//! Registers are stored register-major with 32 lane slots each (`regs[r * 32 + lane]`), so
//! an instruction executed warp-wide walks contiguous memory.
//!
//! Reconvergence: every lane has its own PC; each step runs the instruction at the
//! *smallest* PC among runnable lanes, for exactly the lanes at that PC. Lanes that branched
//! ahead wait until the others catch up, so structured control flow (if/else, loops with
//! divergent trip counts) reconverges at the first common instruction after the divergent
//! region, as the hardware's convergence barriers do for code compiled from structured
//! sources.

use crate::decode::ops::{Reg, Special, Src};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Run,
    /// Waiting at `bar.sync` with this barrier id.
    Bar(u32),
    Exited,
    /// No thread (the block's size is not a multiple of 32).
    Absent,
}

pub(crate) struct Warp {
    pub regs: Vec<u64>,
    pub pc: [u32; 32],
    pub lane: [Lane; 32],
    /// Linear thread index of lane 0.
    pub first_thread: u32,
    /// Registers written by global loads not yet waited on (the time model's scoreboard).
    pub pending: Vec<bool>,
    /// How many `pending` entries are set.
    pub npending: u32,
    /// Global round trips this warp waited for (`cp.async` waits and load-result waits).
    pub waits: u64,
}

/// Block-constant values behind the special registers.
pub(crate) struct Env {
    pub ntid: [u32; 3],
    pub ctaid: [u32; 3],
    pub nctaid: [u32; 3],
    pub nwarps: u32,
}

impl Env {
    pub(crate) fn tid(&self, linear: u32) -> [u32; 3] {
        let [x, y, _] = self.ntid;
        [linear % x, (linear / x) % y, linear / (x * y)]
    }
}

impl Warp {
    pub(crate) fn new(nregs: usize, first_thread: u32, nthreads: u32) -> Warp {
        let mut lane = [Lane::Absent; 32];
        for (l, s) in lane.iter_mut().enumerate() {
            if first_thread + (l as u32) < nthreads {
                *s = Lane::Run;
            }
        }
        Warp {
            regs: vec![0; nregs * 32],
            pending: vec![false; nregs],
            npending: 0,
            waits: 0,
            pc: [0; 32],
            lane,
            first_thread,
        }
    }

    /// The lanes at the smallest runnable PC, and that PC.
    #[inline]
    pub(crate) fn next(&self) -> Option<(u32, u32)> {
        let mut min = u32::MAX;
        let mut mask = 0u32;
        for l in 0..32 {
            if self.lane[l] == Lane::Run {
                let pc = self.pc[l];
                if pc < min {
                    min = pc;
                    mask = 1 << l;
                } else if pc == min {
                    mask |= 1 << l;
                }
            }
        }
        (mask != 0).then_some((min, mask))
    }

    /// Lanes that have exited or never existed.
    pub(crate) fn gone(&self) -> u32 {
        let mut m = 0;
        for l in 0..32 {
            if matches!(self.lane[l], Lane::Exited | Lane::Absent) {
                m |= 1 << l;
            }
        }
        m
    }

    // Measured: the per-lane operand read is the innermost call of every instruction.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub(crate) fn get(&self, s: Src, lane: usize, env: &Env) -> u64 {
        match s {
            Src::Reg(r) => self.regs[r as usize * 32 + lane],
            Src::Imm(v) => v,
            Src::Special(sp) => {
                let linear = self.first_thread + lane as u32;
                let v = match sp {
                    Special::Tid(d) => env.tid(linear)[d as usize],
                    Special::Ntid(d) => env.ntid[d as usize],
                    Special::Ctaid(d) => env.ctaid[d as usize],
                    Special::Nctaid(d) => env.nctaid[d as usize],
                    Special::LaneId => lane as u32,
                    Special::WarpId => linear / 32,
                    Special::NWarpId => env.nwarps,
                };
                v as u64
            }
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, r: Reg, lane: usize, v: u64) {
        self.regs[r as usize * 32 + lane] = v;
    }
}

/// Iterates the set bits of a lane mask.
#[inline]
pub(crate) fn lanes(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            None
        } else {
            let l = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some(l)
        }
    })
}
