//! Host↔device traffic counters: every upload and download the runtime makes goes through a
//! [`crate::Stream`] and is counted there, so tests and benches can check what an op moved.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes moved between host and device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Host to device.
    pub h2d_bytes: u64,
    /// Device to host.
    pub d2h_bytes: u64,
}

impl TransferStats {
    /// The traffic between an earlier reading `before` and this one.
    pub fn since(&self, before: &TransferStats) -> TransferStats {
        TransferStats {
            h2d_bytes: self.h2d_bytes - before.h2d_bytes,
            d2h_bytes: self.d2h_bytes - before.d2h_bytes,
        }
    }
}

/// The shared counter behind a stream and its clones.
#[derive(Debug, Default)]
pub(crate) struct TransferCounter {
    h2d: AtomicU64,
    d2h: AtomicU64,
}

impl TransferCounter {
    pub(crate) fn host_to_device(&self, bytes: usize) {
        self.h2d.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn device_to_host(&self, bytes: usize) {
        self.d2h.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> TransferStats {
        TransferStats {
            h2d_bytes: self.h2d.load(Ordering::Relaxed),
            d2h_bytes: self.d2h.load(Ordering::Relaxed),
        }
    }
}
