//! A counting arena for a model's buffers: every weight, KV-cache and activation tensor is
//! allocated through it, so its byte counts are what the allocator handed out (each tensor's
//! capacity), against a limit. Memory outside it — the state pool's — is charged with the
//! figure that pool measured itself.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use retention_core::{Element, HostTensor};
use serde::Serialize;

use super::error::ModelError;

/// What a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Model parameters.
    Weights,
    /// Per-sequence memory of the context: RetNet's state or the Transformer's KV cache.
    Cache,
    /// Everything a step computes and drops.
    Activations,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Weights => 0,
            Kind::Cache => 1,
            Kind::Activations => 2,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    in_use: [u64; 3],
    high_water: [u64; 3],
    total_high_water: u64,
    limit: u64,
}

impl State {
    fn total(&self) -> u64 {
        self.in_use.iter().sum()
    }

    fn add(&mut self, kind: Kind, bytes: u64) {
        let i = kind.index();
        self.in_use[i] += bytes;
        self.high_water[i] = self.high_water[i].max(self.in_use[i]);
        self.total_high_water = self.total_high_water.max(self.total());
    }
}

/// Measured memory of a model, bytes (high-water marks; `total` is the peak of the sum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryFigures {
    /// Parameters.
    pub weights: u64,
    /// RetNet's state or the Transformer's KV cache, every layer and sequence.
    pub cache: u64,
    /// Peak of the step's activations.
    pub activations: u64,
    /// Peak of all three together.
    pub total: u64,
}

/// A shared byte counter with a limit (clones count into the same ledger).
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<State>>);

impl Ledger {
    /// A ledger refusing to go past `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self(Arc::new(Mutex::new(State {
            limit,
            ..State::default()
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Counters stay consistent even if a holder panicked: every update is one statement.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes still free under the limit.
    pub fn available(&self) -> u64 {
        let s = self.lock();
        s.limit.saturating_sub(s.total())
    }

    /// Check that `bytes` more fit, naming `what` if not.
    fn admit(&self, what: &str, bytes: u64) -> Result<(), ModelError> {
        let s = self.lock();
        if s.total().saturating_add(bytes) > s.limit {
            return Err(ModelError::OutOfMemory {
                what: what.into(),
                requested: bytes,
                in_use: s.total(),
                limit: s.limit,
            });
        }
        Ok(())
    }

    /// A zeroed tensor of `shape`, counted under `kind` until it is dropped.
    ///
    /// # Errors
    /// [`ModelError::OutOfMemory`] when it would pass the limit (nothing is allocated then).
    pub fn tensor<T: Element>(
        &self,
        kind: Kind,
        what: &str,
        shape: &[usize],
    ) -> Result<Tracked<T>, ModelError> {
        let elems = shape
            .iter()
            .try_fold(1usize, |a, &n| a.checked_mul(n))
            .unwrap_or(usize::MAX);
        let want = (elems as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        self.admit(what, want)?;
        let tensor = HostTensor::<T>::zeros(shape.to_vec());
        let bytes = tensor.data().len() as u64 * std::mem::size_of::<T>() as u64;
        self.lock().add(kind, bytes);
        Ok(Tracked {
            tensor,
            kind,
            bytes,
            ledger: self.clone(),
        })
    }

    /// Charge `bytes` held outside the ledger (the state pool's measured high-water mark).
    ///
    /// # Errors
    /// [`ModelError::OutOfMemory`] when they do not fit.
    pub fn charge(&self, kind: Kind, what: &str, bytes: u64) -> Result<Charge, ModelError> {
        self.admit(what, bytes)?;
        self.lock().add(kind, bytes);
        Ok(Charge {
            kind,
            bytes,
            ledger: self.clone(),
        })
    }

    /// Record a short-lived buffer a kernel allocated and already dropped (its output
    /// tensor): it raises the high-water marks as if held on top of what is in use now.
    pub fn transient(&self, kind: Kind, bytes: u64) {
        let mut s = self.lock();
        s.add(kind, bytes);
        s.in_use[kind.index()] -= bytes;
    }

    /// High-water marks so far.
    pub fn figures(&self) -> MemoryFigures {
        let s = self.lock();
        MemoryFigures {
            weights: s.high_water[0],
            cache: s.high_water[1],
            activations: s.high_water[2],
            total: s.total_high_water,
        }
    }

    /// Forget the high-water marks of the cache and activations (keep what is in use): the
    /// next point measures from here.
    pub fn reset_peaks(&self) {
        let mut s = self.lock();
        for i in 1..3 {
            s.high_water[i] = s.in_use[i];
        }
        s.total_high_water = s.total();
    }

    fn release(&self, kind: Kind, bytes: u64) {
        let mut s = self.lock();
        let i = kind.index();
        s.in_use[i] = s.in_use[i].saturating_sub(bytes);
    }
}

/// A tensor whose bytes are counted in a [`Ledger`] while it lives.
#[derive(Debug)]
pub struct Tracked<T: Element> {
    tensor: HostTensor<T>,
    kind: Kind,
    bytes: u64,
    ledger: Ledger,
}

impl<T: Element> Tracked<T> {
    /// The tensor.
    pub fn get(&self) -> &HostTensor<T> {
        &self.tensor
    }

    /// Its elements.
    pub fn data(&self) -> &[T] {
        self.tensor.data()
    }

    /// Its elements, mutably.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.tensor.data_mut()
    }
}

impl<T: Element> Drop for Tracked<T> {
    fn drop(&mut self) {
        self.ledger.release(self.kind, self.bytes);
    }
}

/// Bytes held outside the ledger, counted in it while this lives.
#[derive(Debug)]
pub struct Charge {
    kind: Kind,
    bytes: u64,
    ledger: Ledger,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.ledger.release(self.kind, self.bytes);
    }
}
