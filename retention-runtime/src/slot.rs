//! Generation-checked handles to the sequences of a [`crate::StatePool`].

use std::sync::atomic::{AtomicU64, Ordering};

use retention_core::{Result, RetentionError};

/// A handle to one sequence's recurrent state. It names its pool and the generation of its
/// slot, so a freed (stale) handle or one from another pool is an error, never a read of
/// another sequence's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pool: u64,
    index: u32,
    generation: u32,
}

impl Slot {
    /// Position of the slot in its pool.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

/// Unique pool identities for the process.
pub(crate) fn next_pool_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The live/free bookkeeping of a fixed number of slots.
#[derive(Debug)]
pub(crate) struct SlotTable {
    pool: u64,
    generations: Vec<u32>,
    live: Vec<bool>,
    free: Vec<u32>,
}

impl SlotTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            pool: next_pool_id(),
            generations: vec![0; capacity],
            live: vec![false; capacity],
            // Pop from the end: hand out slot 0 first.
            free: (0..capacity as u32).rev().collect(),
        }
    }

    pub fn alloc(&mut self) -> Result<Slot> {
        let index = self.free.pop().ok_or_else(|| {
            RetentionError::Slot(format!("pool is full ({} slots in use)", self.live.len()))
        })?;
        self.live[index as usize] = true;
        Ok(Slot {
            pool: self.pool,
            index,
            generation: self.generations[index as usize],
        })
    }

    pub fn check(&self, slot: Slot) -> Result<usize> {
        if slot.pool != self.pool {
            return Err(RetentionError::Slot(format!(
                "slot {} belongs to another pool",
                slot.index
            )));
        }
        let i = slot.index as usize;
        if !self.live[i] || self.generations[i] != slot.generation {
            return Err(RetentionError::Slot(format!(
                "slot {i} (generation {}) was freed",
                slot.generation
            )));
        }
        Ok(i)
    }

    pub fn free(&mut self, slot: Slot) -> Result<usize> {
        let i = self.check(slot)?;
        self.live[i] = false;
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.free.push(slot.index);
        Ok(i)
    }

    pub fn in_use(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_foreign_and_full() {
        let mut t = SlotTable::new(2);
        let a = t.alloc().unwrap();
        let b = t.alloc().unwrap();
        assert!(t.alloc().is_err());
        t.free(a).unwrap();
        assert!(t.check(a).is_err(), "stale handle");
        assert!(t.free(a).is_err(), "double free");
        let c = t.alloc().unwrap();
        assert_eq!(c.index(), a.index());
        assert!(
            t.check(a).is_err(),
            "old generation stays stale after reuse"
        );
        assert_eq!(t.check(c).unwrap(), a.index());
        let other = SlotTable::new(2);
        assert!(other.check(b).is_err(), "foreign handle");
        assert_eq!(t.in_use(), 2);
    }
}
