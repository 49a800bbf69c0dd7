//! Loads, stores, atomics and `cp.async` issue: address resolution, bounds and alignment
//! checks, race tracking, and the coalescing / bank-conflict counters.

use std::sync::atomic::Ordering;

use super::block::{Block, PendingCopy};
use super::warp::lanes;
use crate::decode::ops::{Addr, AddrBase, AtomOp, Op, Space};
use crate::error::{AccessKind, EmuError};
use crate::memory_map::{LOCAL_WINDOW, SHARED_WINDOW, WINDOW_BYTES};
use crate::types::Ty;

/// A resolved, checked location.
#[derive(Clone, Copy)]
pub(crate) enum Loc {
    /// Allocation index and absolute address.
    Global(usize, u64),
    Shared(u64),
    /// Index into the block's local bytes.
    Local(u64),
    Param(u64),
}

impl Block<'_> {
    pub(crate) fn address(&self, w: usize, l: usize, a: Addr) -> u64 {
        let base = match a.base {
            AddrBase::Reg(r) => self.warps[w].regs[r as usize * 32 + l],
            AddrBase::Abs(v) => v,
        };
        base.wrapping_add(a.offset as u64)
    }

    /// Checks `size` bytes at `addr` in `space` for thread lane `l` of warp `w`.
    pub(crate) fn resolve(
        &self,
        w: usize,
        l: usize,
        pc: u32,
        space: Space,
        addr: u64,
        size: u32,
        kind: AccessKind,
    ) -> Result<Loc, EmuError> {
        let t = self.warps[w].first_thread + l as u32;
        if !addr.is_multiple_of(size as u64) {
            return Err(EmuError::Misaligned {
                site: self.site(pc, t),
                address: addr,
                size,
            });
        }
        let space = match space {
            Space::Generic => {
                if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_BYTES).contains(&addr) {
                    return self.resolve(w, l, pc, Space::Shared, addr - SHARED_WINDOW, size, kind);
                }
                if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_BYTES).contains(&addr) {
                    return self.resolve(w, l, pc, Space::Local, addr - LOCAL_WINDOW, size, kind);
                }
                Space::Global
            }
            s => s,
        };
        match space {
            Space::Global => {
                let g = &self.l.global;
                let fits = |a: &super::global::Allocation| {
                    addr >= a.base && addr.saturating_add(size as u64) <= a.base + a.len
                };
                // Neighbouring lanes nearly always hit the buffer the previous lane hit.
                let hint = self.alloc_hint.get();
                let found = if g.allocs.get(hint).is_some_and(fits) {
                    Some(hint)
                } else {
                    g.allocs.iter().position(fits)
                };
                match found {
                    Some(i) => {
                        self.alloc_hint.set(i);
                        Ok(Loc::Global(i, addr))
                    }
                    None => Err(EmuError::GlobalOutOfBounds {
                        site: self.site(pc, t),
                        kind,
                        address: addr,
                        size,
                    }),
                }
            }
            Space::Shared => {
                if addr.saturating_add(size as u64) <= self.shared.len() {
                    Ok(Loc::Shared(addr))
                } else {
                    Err(EmuError::SharedOutOfBounds {
                        site: self.site(pc, t),
                        kind,
                        offset: addr,
                        size,
                        shared_bytes: self.shared.len(),
                    })
                }
            }
            Space::Local => {
                let lb = self.l.kernel.local_bytes;
                if addr.saturating_add(size as u64) <= lb {
                    Ok(Loc::Local(t as u64 * lb + addr))
                } else {
                    Err(EmuError::OutOfBounds {
                        site: self.site(pc, t),
                        space: "local",
                        offset: addr,
                        size,
                        limit: lb,
                    })
                }
            }
            Space::Param => {
                let pb = self.l.params.len() as u64;
                if addr.saturating_add(size as u64) <= pb {
                    Ok(Loc::Param(addr))
                } else {
                    Err(EmuError::OutOfBounds {
                        site: self.site(pc, t),
                        space: "param",
                        offset: addr,
                        size,
                        limit: pb,
                    })
                }
            }
            Space::Generic => unreachable!("classified above"),
        }
    }

    fn load(&mut self, loc: Loc, size: u32, t: u32, pc: u32) -> Result<u64, EmuError> {
        Ok(match loc {
            Loc::Global(i, a) => {
                self.counters.global_bytes_read += size as u64;
                self.l.global.allocs[i].read(a, size)
            }
            Loc::Shared(o) => {
                if let Err(r) = self.shared.track(o, size, t, AccessKind::Read) {
                    return Err(self.race(pc, t, &r, AccessKind::Read));
                }
                self.shared.read(o, size)
            }
            Loc::Local(o) => read_le(&self.local, o, size),
            Loc::Param(o) => read_le(self.l.params, o, size),
        })
    }

    fn store(&mut self, loc: Loc, size: u32, v: u64, t: u32, pc: u32) -> Result<(), EmuError> {
        match loc {
            Loc::Global(i, a) => {
                self.check_writable(i, a, size, t, pc)?;
                self.counters.global_bytes_written += size as u64;
                self.l.global.allocs[i].write(a, size, v);
            }
            Loc::Shared(o) => {
                if let Err(r) = self.shared.track(o, size, t, AccessKind::Write) {
                    return Err(self.race(pc, t, &r, AccessKind::Write));
                }
                self.shared.write(o, size, v);
            }
            Loc::Local(o) => {
                let o = o as usize;
                self.local[o..o + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
            }
            Loc::Param(_) => unreachable!("param stores are rejected at decode"),
        }
        Ok(())
    }

    pub(crate) fn check_writable(
        &self,
        i: usize,
        a: u64,
        size: u32,
        t: u32,
        pc: u32,
    ) -> Result<(), EmuError> {
        let alloc = &self.l.global.allocs[i];
        if !alloc.writable {
            return Err(EmuError::WriteToInput {
                site: self.site(pc, t),
                address: a,
                size,
                param: alloc.param,
            });
        }
        // Load before store: the flags are shared by all blocks, and an unconditional store
        // would bounce their cache line between cores on every access.
        if !alloc.written.load(Ordering::Relaxed) {
            alloc.written.store(true, Ordering::Relaxed);
        }
        if alloc.nc_read.load(Ordering::Relaxed) {
            return Err(self.nc_conflict(i, a, t, pc));
        }
        Ok(())
    }

    /// Records a non-coherent (`.nc`) read; the buffer must not be written in this launch.
    fn mark_nc_read(&self, i: usize, a: u64, t: u32, pc: u32) -> Result<(), EmuError> {
        let alloc = &self.l.global.allocs[i];
        if !alloc.nc_read.load(Ordering::Relaxed) {
            alloc.nc_read.store(true, Ordering::Relaxed);
        }
        if alloc.written.load(Ordering::Relaxed) {
            return Err(self.nc_conflict(i, a, t, pc));
        }
        Ok(())
    }

    fn nc_conflict(&self, i: usize, a: u64, t: u32, pc: u32) -> EmuError {
        EmuError::NonCoherentWrittenBuffer {
            site: self.site(pc, t),
            address: a,
            param: self.l.global.allocs[i].param,
        }
    }

    /// Records one warp request's coalescing or bank behaviour.
    pub(crate) fn count_request(&mut self, accesses: &[(Loc, u32)]) {
        let Some(first) = accesses.first() else {
            return;
        };
        match first.0 {
            Loc::Global(..) => {
                // Aligned accesses of at most 16 bytes never straddle a 32-byte sector.
                let mut sectors = [0u64; 32];
                let mut n = 0;
                for (loc, _) in accesses {
                    if let Loc::Global(_, a) = loc {
                        sectors[n] = a >> 5;
                        n += 1;
                    }
                }
                let sectors = &mut sectors[..n];
                if !sectors.is_sorted() {
                    sectors.sort_unstable();
                }
                let distinct = 1 + sectors.windows(2).filter(|w| w[0] != w[1]).count();
                self.counters.global_requests += 1;
                self.counters.global_sectors += distinct as u64;
            }
            Loc::Shared(_) => {
                let size = first.1;
                let per_phase = (128 / size.max(4)).min(32) as usize;
                for phase in accesses.chunks(per_phase) {
                    // Fast path: every bank sees at most one distinct word (conflict-free,
                    // broadcasts included).
                    let mut bank_word = [u64::MAX; 32];
                    let mut conflict = false;
                    'scan: for (loc, sz) in phase {
                        if let Loc::Shared(o) = loc {
                            for wd in (o / 4)..(o + *sz as u64).div_ceil(4) {
                                let slot = &mut bank_word[(wd % 32) as usize];
                                if *slot == u64::MAX {
                                    *slot = wd;
                                } else if *slot != wd {
                                    conflict = true;
                                    break 'scan;
                                }
                            }
                        }
                    }
                    if !conflict {
                        self.counters.shared_wavefronts += 1;
                        continue;
                    }
                    // (bank, word) pairs of this phase; at most 128 bytes = 32 words, or 32
                    // lanes of sub-word accesses.
                    let mut words = [(0u8, 0u64); 128];
                    let mut n = 0;
                    for (loc, sz) in phase {
                        if let Loc::Shared(o) = loc {
                            for wd in (o / 4)..(o + *sz as u64).div_ceil(4) {
                                if n < words.len() {
                                    words[n] = ((wd % 32) as u8, wd);
                                    n += 1;
                                }
                            }
                        }
                    }
                    let words = &mut words[..n];
                    words.sort_unstable();
                    let mut per_bank = [0u32; 32];
                    for (i, w) in words.iter().enumerate() {
                        if i == 0 || words[i - 1] != *w {
                            per_bank[w.0 as usize] += 1;
                        }
                    }
                    let max = per_bank.iter().copied().max().unwrap_or(0) as u64;
                    self.counters.shared_wavefronts += max;
                    self.counters.shared_bank_conflicts += max.saturating_sub(1);
                }
                self.counters.shared_requests += 1;
            }
            _ => {}
        }
    }
}

/// One warp request's checked locations (at most one per lane), kept on the stack.
pub(crate) struct Requests {
    items: [(Loc, u32); 32],
    n: usize,
}

impl Requests {
    pub(crate) fn new() -> Requests {
        Requests {
            items: [(Loc::Param(0), 0); 32],
            n: 0,
        }
    }

    pub(crate) fn push(&mut self, r: (Loc, u32)) {
        if self.n < 32 {
            self.items[self.n] = r;
            self.n += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[(Loc, u32)] {
        &self.items[..self.n]
    }
}

fn read_le(bytes: &[u8], o: u64, size: u32) -> u64 {
    let o = o as usize;
    let mut b = [0u8; 8];
    b[..size as usize].copy_from_slice(&bytes[o..o + size as usize]);
    u64::from_le_bytes(b)
}

/// Loads, stores, atomics and `cp.async` for the lanes in `exec`.
pub(crate) fn exec_mem(
    b: &mut Block,
    w: usize,
    pc: u32,
    exec: u32,
    op: &Op,
) -> Result<(), EmuError> {
    let mut accesses = Requests::new();
    match *op {
        Op::Ld {
            space,
            ty,
            n,
            d,
            addr,
            nc,
        } => {
            let eb = ty.bytes();
            let total = eb * n as u32;
            for l in lanes(exec) {
                let t = b.warps[w].first_thread + l as u32;
                let a = b.address(w, l, addr);
                let loc = b.resolve(w, l, pc, space, a, total, AccessKind::Read)?;
                if nc && let Loc::Global(i, ga) = loc {
                    b.mark_nc_read(i, ga, t, pc)?;
                }
                accesses.push((loc, total));
                for k in 0..n as usize {
                    let v = b.load(offset(loc, k as u64 * eb as u64), eb, t, pc)?;
                    b.warps[w].set(d[k], l, ty.normalize(v));
                }
            }
        }
        Op::St {
            space,
            ty,
            n,
            s,
            addr,
        } => {
            let eb = ty.bytes();
            let total = eb * n as u32;
            for l in lanes(exec) {
                let t = b.warps[w].first_thread + l as u32;
                let a = b.address(w, l, addr);
                let loc = b.resolve(w, l, pc, space, a, total, AccessKind::Write)?;
                accesses.push((loc, total));
                for k in 0..n as usize {
                    let v = b.val(w, s[k], l);
                    b.store(offset(loc, k as u64 * eb as u64), eb, v, t, pc)?;
                }
            }
        }
        Op::Atom {
            op,
            ty,
            space,
            d,
            addr,
            b: src,
            c,
        } => {
            let size = ty.bytes();
            for l in lanes(exec) {
                let a = b.address(w, l, addr);
                let loc = b.resolve(w, l, pc, space, a, size, AccessKind::Write)?;
                let Loc::Global(i, ga) = loc else {
                    let t = b.warps[w].first_thread + l as u32;
                    return Err(b.undefined(pc, t, "atomics are supported on global memory only"));
                };
                b.check_writable(i, ga, size, b.warps[w].first_thread + l as u32, pc)?;
                accesses.push((loc, size));
                let v = b.val(w, src, l);
                let cv = c.map(|c| b.val(w, c, l));
                let old = b.l.global.allocs[i].rmw(ga, size, |old| atom_apply(op, ty, old, v, cv));
                b.counters.global_bytes_read += size as u64;
                b.counters.global_bytes_written += size as u64;
                if let Some(d) = d {
                    b.warps[w].set(d, l, ty.normalize(old));
                }
            }
        }
        Op::CpAsync {
            bytes,
            src_bytes,
            dst,
            src,
        } => {
            for l in lanes(exec) {
                let t = b.warps[w].first_thread + l as u32;
                let sa = b.address(w, l, src);
                let da = b.address(w, l, dst);
                let n_src = match src_bytes {
                    Some(s) => (b.val(w, s, l) as u32).min(bytes),
                    None => bytes,
                };
                let dloc = b.resolve(w, l, pc, Space::Shared, da, bytes, AccessKind::Write)?;
                let mut data = [0u8; 16];
                if n_src > 0 {
                    let sloc = b.resolve(w, l, pc, Space::Global, sa, bytes, AccessKind::Read)?;
                    accesses.push((sloc, bytes));
                    if let Loc::Global(i, ga) = sloc {
                        for k in 0..n_src {
                            data[k as usize] = b.l.global.allocs[i].read(ga + k as u64, 1) as u8;
                        }
                        b.counters.global_bytes_read += n_src as u64;
                    }
                }
                let Loc::Shared(off) = dloc else {
                    unreachable!("resolved in shared space")
                };
                b.cp[t as usize].uncommitted.push(PendingCopy {
                    dst: off,
                    len: bytes,
                    data,
                });
            }
        }
        _ => unreachable!("not a memory op"),
    }
    b.count_request(accesses.as_slice());
    Ok(())
}

fn offset(loc: Loc, by: u64) -> Loc {
    match loc {
        Loc::Global(i, a) => Loc::Global(i, a + by),
        Loc::Shared(o) => Loc::Shared(o + by),
        Loc::Local(o) => Loc::Local(o + by),
        Loc::Param(o) => Loc::Param(o + by),
    }
}

fn atom_apply(op: AtomOp, ty: Ty, old: u64, v: u64, c: Option<u64>) -> u64 {
    if ty == Ty::F32 {
        return match op {
            AtomOp::Add => (f32::from_bits(old as u32) + f32::from_bits(v as u32)).to_bits() as u64,
            _ => v,
        };
    }
    let bits = ty.bits();
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let (o, x) = (ty.int_value(old), ty.int_value(v));
    let r = match op {
        AtomOp::Add => o.wrapping_add(x),
        AtomOp::Min => o.min(x),
        AtomOp::Max => o.max(x),
        AtomOp::Exch => x,
        AtomOp::Cas => {
            if (old ^ v) & m == 0 {
                c.map_or(old as i128, |c| ty.int_value(c))
            } else {
                o
            }
        }
        AtomOp::And => (old & v) as i128,
        AtomOp::Or => (old | v) as i128,
        AtomOp::Xor => (old ^ v) as i128,
    };
    (r as u64) & m
}
