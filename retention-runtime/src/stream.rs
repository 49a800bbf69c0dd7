//! Streams and events with one API on every device: real CUDA streams and events on a GPU;
//! on the CPU and the emulator an in-order queue whose work runs to completion as it is
//! submitted (so an event marks the moment everything before it finished).
//!
//! A stream also counts the bytes it moves between host and device ([`TransferStats`]) and
//! can capture its launches into a replayable [`crate::Graph`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::capture::CaptureState;
use crate::transfer::{TransferCounter, TransferStats};

use retention_core::{Result, RetentionError};

use crate::cuda;
use crate::device::Device;

mod borrowed;

/// An in-order queue of work on one device.
#[derive(Debug, Clone)]
pub struct Stream {
    device: Device,
    inner: StreamInner,
    transfers: Arc<TransferCounter>,
    capture: Arc<Mutex<Option<CaptureState>>>,
}

#[derive(Debug, Clone)]
enum StreamInner {
    /// Host-executed devices: submission is completion.
    Host,
    Cuda(cuda::Stream),
}

/// A point in a stream's order, for timing what ran between two of them.
#[derive(Debug)]
pub struct Event {
    device: Device,
    inner: EventInner,
}

#[derive(Debug)]
enum EventInner {
    Host(Instant),
    Cuda(cuda::Event),
}

impl Stream {
    /// A new stream on `device`.
    ///
    /// # Errors
    /// [`RetentionError::NoDevice`] for a CUDA device that is not there; a driver failure.
    pub fn new(device: &Device) -> Result<Self> {
        let inner = match device {
            Device::Cuda(ordinal) => {
                StreamInner::Cuda(cuda::CudaBackend::new(*ordinal)?.new_stream()?)
            }
            _ => StreamInner::Host,
        };
        Ok(Self::with_inner(device, inner))
    }

    fn with_inner(device: &Device, inner: StreamInner) -> Self {
        Self {
            device: device.clone(),
            inner,
            transfers: Arc::default(),
            capture: Arc::default(),
        }
    }

    /// The device's default stream: one per device and process, shared by every op that is
    /// given no stream (on CUDA, the runtime's stream of that device).
    ///
    /// # Errors
    /// As [`Stream::new`].
    pub fn default_for(device: &Device) -> Result<Self> {
        static DEFAULTS: OnceLock<Mutex<HashMap<String, Stream>>> = OnceLock::new();
        let mut map = DEFAULTS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = map.get(&device.name()) {
            return Ok(s.clone());
        }
        let inner = match device {
            Device::Cuda(ordinal) => StreamInner::Cuda(
                crate::cuda_target::CudaTarget::open(*ordinal)?
                    .stream()
                    .clone(),
            ),
            _ => StreamInner::Host,
        };
        let stream = Self::with_inner(device, inner);
        map.insert(device.name(), stream.clone());
        Ok(stream)
    }

    /// Bytes this stream (and its clones) moved between host and device so far.
    pub fn transfers(&self) -> TransferStats {
        self.transfers.stats()
    }

    pub(crate) fn counter(&self) -> &TransferCounter {
        &self.transfers
    }

    /// The CUDA stream, on a CUDA device.
    pub(crate) fn cuda(&self) -> Option<&cuda::Stream> {
        match &self.inner {
            StreamInner::Cuda(s) => Some(s),
            StreamInner::Host => None,
        }
    }

    pub(crate) fn capture_state(&self) -> std::sync::MutexGuard<'_, Option<CaptureState>> {
        self.capture
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True while the stream captures a graph (host copies are refused then).
    pub fn is_capturing(&self) -> bool {
        self.capture_state().is_some()
    }

    /// The device the stream runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Wait until everything submitted so far has finished.
    ///
    /// # Errors
    /// A device failure (CUDA).
    pub fn synchronize(&self) -> Result<()> {
        match &self.inner {
            StreamInner::Host => Ok(()),
            StreamInner::Cuda(s) => s.synchronize(),
        }
    }

    /// Record an event after everything submitted so far.
    ///
    /// # Errors
    /// A device failure (CUDA).
    pub fn record(&self) -> Result<Event> {
        let inner = match &self.inner {
            StreamInner::Host => EventInner::Host(Instant::now()),
            StreamInner::Cuda(s) => EventInner::Cuda(s.record_event()?),
        };
        Ok(Event {
            device: self.device.clone(),
            inner,
        })
    }
}

impl Event {
    /// Seconds from this event to a later one of the same device (waits for `end`).
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] for events of different devices; a device failure.
    pub fn elapsed_seconds(&self, end: &Event) -> Result<f64> {
        match (&self.inner, &end.inner) {
            (EventInner::Host(a), EventInner::Host(b)) if self.device == end.device => {
                Ok(b.saturating_duration_since(*a).as_secs_f64())
            }
            (EventInner::Cuda(a), EventInner::Cuda(b)) => Ok(f64::from(a.elapsed_ms(b)?) / 1e3),
            _ => Err(RetentionError::Unsupported {
                what: "timing across devices".into(),
                value: format!("{} to {}", self.device, end.device),
                reason: "events time work on one device".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_gen::Arch;

    #[test]
    fn host_streams_time_their_work_in_order() {
        for device in [Device::Cpu, Device::Emulated(Arch::Sm80)] {
            let stream = Stream::new(&device).unwrap();
            let start = stream.record().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let end = stream.record().unwrap();
            stream.synchronize().unwrap();
            let t = start.elapsed_seconds(&end).unwrap();
            assert!((0.015..5.0).contains(&t), "{device}: {t}");
            assert_eq!(
                end.elapsed_seconds(&start).unwrap(),
                0.0,
                "saturates, never negative"
            );
            assert_eq!(stream.device(), &device);
        }
        let a = Stream::new(&Device::Cpu).unwrap().record().unwrap();
        let b = Stream::new(&Device::Emulated(Arch::Sm80))
            .unwrap()
            .record()
            .unwrap();
        assert!(matches!(
            a.elapsed_seconds(&b),
            Err(RetentionError::Unsupported { .. })
        ));
    }

    #[test]
    fn a_cuda_stream_without_a_gpu_is_no_device() {
        if cuda::device_count() == 0 {
            assert!(matches!(
                Stream::new(&Device::Cuda(0)),
                Err(RetentionError::NoDevice(_))
            ));
        }
    }
}
