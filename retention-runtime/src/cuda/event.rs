//! Timing events: mark a point in a stream, measure the GPU time between two marks.

use cudarc::driver::CudaEvent;
use retention_core::Result;

use super::error::{device_error, foreign_object};
use super::stream::Stream;

/// A timing event, created by [`Stream::record_event`] and re-recordable on any stream of
/// the same device.
#[derive(Debug)]
pub struct Event {
    pub(super) inner: CudaEvent,
}

impl Event {
    fn ordinal(&self) -> usize {
        self.inner.context().ordinal()
    }

    /// Marks the current end of `stream`'s queued work.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`](retention_core::RetentionError::Unsupported) when
    /// `stream` belongs to another device; [`RetentionError::DeviceFailure`](retention_core::RetentionError::DeviceFailure)
    /// when the driver call fails.
    pub fn record(&self, stream: &Stream) -> Result<()> {
        if self.inner.context() != stream.inner.context() {
            return Err(foreign_object("a stream", self.ordinal(), stream.ordinal()));
        }
        self.inner
            .record(&stream.inner)
            .map_err(|e| device_error(self.ordinal(), "recording an event", e))
    }

    /// Waits until the work before this event has finished.
    ///
    /// # Errors
    /// [`RetentionError::DeviceFailure`](retention_core::RetentionError::DeviceFailure) when the device
    /// reports a failure, including an earlier kernel's fault.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .synchronize()
            .map_err(|e| device_error(self.ordinal(), "waiting for an event", e))
    }

    /// GPU milliseconds from this event to `end` (waits for both). Resolution is about
    /// half a microsecond.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`](retention_core::RetentionError::Unsupported) when the
    /// events belong to different devices; [`RetentionError::DeviceFailure`](retention_core::RetentionError::DeviceFailure)
    /// when either was never recorded or the driver call fails.
    pub fn elapsed_ms(&self, end: &Event) -> Result<f32> {
        if self.inner.context() != end.inner.context() {
            return Err(foreign_object("an event", self.ordinal(), end.ordinal()));
        }
        self.inner
            .elapsed_ms(&end.inner)
            .map_err(|e| device_error(self.ordinal(), "timing between events", e))
    }
}
