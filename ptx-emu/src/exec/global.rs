//! Global memory: the launch's buffers at synthetic addresses, shared by all blocks.
//!
//! Blocks run in parallel, so each buffer is a vector of `AtomicU32` words accessed with
//! relaxed ordering (a plain load/store on x86 and ARM): ordinary accesses cost what a plain
//! access costs, and `atom.global` is a real atomic read-modify-write.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::memory_map::{GLOBAL_BASE, GUARD_BYTES};

pub(crate) struct Allocation {
    pub base: u64,
    pub len: u64,
    /// Whether the launch marked the buffer as an output (stores allowed).
    pub writable: bool,
    /// Kernel parameter index holding this buffer.
    pub param: usize,
    /// Whether any thread read it with `ld.global.nc` / `ldu`.
    pub nc_read: AtomicBool,
    /// Whether any thread stored to it (or ran an atomic on it).
    pub written: AtomicBool,
    words: Vec<AtomicU32>,
}

pub(crate) struct GlobalMemory {
    pub allocs: Vec<Allocation>,
}

impl GlobalMemory {
    /// Places each buffer after the previous one plus a guard gap; returns the memory and
    /// each buffer's base address.
    pub(crate) fn new(buffers: &[(&[u8], bool, usize)]) -> (GlobalMemory, Vec<u64>) {
        let mut next = GLOBAL_BASE;
        let mut allocs = Vec::new();
        let mut bases = Vec::new();
        for &(b, writable, param) in buffers {
            let len = b.len() as u64;
            let words = b
                .chunks(4)
                .map(|c| {
                    let mut w = [0u8; 4];
                    w[..c.len()].copy_from_slice(c);
                    AtomicU32::new(u32::from_le_bytes(w))
                })
                .collect();
            allocs.push(Allocation {
                base: next,
                len,
                writable,
                param,
                nc_read: AtomicBool::new(false),
                written: AtomicBool::new(false),
                words,
            });
            bases.push(next);
            next += len.div_ceil(GUARD_BYTES) * GUARD_BYTES + GUARD_BYTES;
        }
        (GlobalMemory { allocs }, bases)
    }

    pub(crate) fn into_bytes(self) -> Vec<Vec<u8>> {
        self.allocs
            .into_iter()
            .map(|a| {
                let mut out: Vec<u8> = a
                    .words
                    .into_iter()
                    .flat_map(|w| w.into_inner().to_le_bytes())
                    .collect();
                out.truncate(a.len as usize);
                out
            })
            .collect()
    }
}

impl Allocation {
    /// Reads `size` (1, 2, 4, 8) bytes at an aligned in-bounds address, little-endian.
    #[inline]
    pub(crate) fn read(&self, addr: u64, size: u32) -> u64 {
        let off = addr - self.base;
        let w = (off / 4) as usize;
        match size {
            8 => {
                let lo = self.words[w].load(Ordering::Relaxed) as u64;
                let hi = self.words[w + 1].load(Ordering::Relaxed) as u64;
                lo | (hi << 32)
            }
            4 => self.words[w].load(Ordering::Relaxed) as u64,
            _ => {
                let v = self.words[w].load(Ordering::Relaxed) as u64;
                let shift = (off % 4) * 8;
                (v >> shift) & ((1u64 << (size * 8)) - 1)
            }
        }
    }

    #[inline]
    pub(crate) fn write(&self, addr: u64, size: u32, v: u64) {
        let off = addr - self.base;
        let w = (off / 4) as usize;
        match size {
            8 => {
                self.words[w].store(v as u32, Ordering::Relaxed);
                self.words[w + 1].store((v >> 32) as u32, Ordering::Relaxed);
            }
            4 => self.words[w].store(v as u32, Ordering::Relaxed),
            _ => {
                let shift = (off % 4) * 8;
                let m = (((1u64 << (size * 8)) - 1) << shift) as u32;
                let bits = ((v << shift) as u32) & m;
                let _ = self.words[w].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                    Some((old & !m) | bits)
                });
            }
        }
    }

    /// Atomic read-modify-write of an aligned 4- or 8-byte value; returns the old value.
    pub(crate) fn rmw(&self, addr: u64, size: u32, f: impl Fn(u64) -> u64) -> u64 {
        let w = ((addr - self.base) / 4) as usize;
        if size == 4 {
            let old = self.words[w]
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                    Some(f(o as u64) as u32)
                })
                .unwrap_or_else(|o| o);
            old as u64
        } else {
            // 64-bit atomics span two words: serialise them through one lock.
            let _guard = WIDE_ATOMIC_LOCK
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let old = self.read(addr, 8);
            self.write(addr, 8, f(old));
            old
        }
    }
}

static WIDE_ATOMIC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
