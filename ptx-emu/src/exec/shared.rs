//! One block's shared memory with its race detector.
//!
//! Every byte remembers the last writer and the last reader(s) together with the barrier
//! epoch of that access. Two different threads touching the same byte in the same epoch,
//! at least one of them writing, is a race: nothing orders them (ARCHITECTURE §4.2). Byte (not
//! word) granularity keeps f16 stores of neighbouring threads into one word race-free, as
//! they are on hardware.

use crate::error::AccessKind;

const MANY: u32 = u32::MAX;

#[derive(Clone, Copy, Default)]
struct Track {
    write_epoch: u32,
    writer: u32,
    read_epoch: u32,
    reader: u32,
}

/// A race found by [`SharedMemory::track`]: offset, earlier access kind, earlier thread.
pub(crate) struct Race {
    pub offset: u64,
    pub other: AccessKind,
    pub other_thread: u32,
}

pub(crate) struct SharedMemory {
    pub bytes: Vec<u8>,
    track: Vec<Track>,
    /// Barrier epoch; starts at 1 so that 0 means "never accessed".
    pub epoch: u32,
    /// Reads (per thread access) that touched a byte no thread of the block had written.
    pub uninit_reads: u64,
}

impl SharedMemory {
    pub(crate) fn new(size: u64) -> SharedMemory {
        SharedMemory {
            bytes: vec![0; size as usize],
            track: vec![Track::default(); size as usize],
            epoch: 1,
            uninit_reads: 0,
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Records an in-bounds access by linear thread `t`, or reports the race it completes.
    #[inline]
    pub(crate) fn track(
        &mut self,
        off: u64,
        size: u32,
        t: u32,
        kind: AccessKind,
    ) -> Result<(), Race> {
        let e = self.epoch;
        let range = off as usize..off as usize + size as usize;
        if kind == AccessKind::Read
            && self.track[range.clone()]
                .iter()
                .any(|tr| tr.write_epoch == 0)
        {
            self.uninit_reads += 1;
        }
        for (i, tr) in self.track[range].iter_mut().enumerate() {
            if tr.write_epoch == e && tr.writer != t {
                return Err(Race {
                    offset: off + i as u64,
                    other: AccessKind::Write,
                    other_thread: tr.writer,
                });
            }
            match kind {
                AccessKind::Read => {
                    if tr.read_epoch != e {
                        tr.read_epoch = e;
                        tr.reader = t;
                    } else if tr.reader != t {
                        tr.reader = MANY;
                    }
                }
                AccessKind::Write => {
                    if tr.read_epoch == e && tr.reader != t {
                        return Err(Race {
                            offset: off + i as u64,
                            other: AccessKind::Read,
                            other_thread: tr.reader,
                        });
                    }
                    tr.write_epoch = e;
                    tr.writer = t;
                }
            }
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn read(&self, off: u64, size: u32) -> u64 {
        let o = off as usize;
        let mut b = [0u8; 8];
        b[..size as usize].copy_from_slice(&self.bytes[o..o + size as usize]);
        u64::from_le_bytes(b)
    }

    #[inline]
    pub(crate) fn write(&mut self, off: u64, size: u32, v: u64) {
        let o = off as usize;
        self.bytes[o..o + size as usize].copy_from_slice(&v.to_le_bytes()[..size as usize]);
    }
}

/// The thread named when several threads read a byte before a conflicting write.
pub(crate) const MANY_READERS: u32 = MANY;
