//! Graph capture: a stream's work recorded once and replayed with one call. On CUDA the
//! driver captures the stream into a CUDA graph; on the emulator the runtime records the
//! launch list itself and replays it identically. Either way the graph keeps a liveness
//! token of every owned tensor it touches, so replaying after one is gone (a dropped
//! `StatePool`, say) is an error, never a write into freed memory.

use std::sync::Weak;

use retention_core::{Result, RetentionError};

use crate::cuda;
use crate::device::Device;
use crate::kernel_launch::{Executor, KernelLaunch, Region};
use crate::stream::Stream;

/// One recorded piece of emulated work.
#[derive(Debug, Clone)]
pub(crate) enum Recorded {
    Launch(KernelLaunch),
    Copy(Region, Region),
    Zero(Region),
}

/// What a capturing stream has gathered so far.
#[derive(Debug, Default)]
pub(crate) struct CaptureState {
    pub work: Vec<Recorded>,
    pub alive: Vec<Weak<()>>,
}

/// A captured piece of stream work, replayable on the stream it was captured from.
#[derive(Debug)]
pub struct Graph {
    stream: Stream,
    inner: GraphInner,
    alive: Vec<Weak<()>>,
}

#[derive(Debug)]
enum GraphInner {
    Emulated(Vec<Recorded>),
    Cuda(cuda::Graph),
}

impl Stream {
    /// Starts capturing: until [`Stream::end_capture`], launches on this stream are recorded
    /// instead of run, and host copies are refused.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] on the CPU (its ops are not launches) or when already
    /// capturing; a driver failure.
    pub fn begin_capture(&self) -> Result<()> {
        let unsupported = |value: &str| RetentionError::Unsupported {
            what: "graph capture".into(),
            value: value.into(),
            reason: "graphs capture kernel launches of a GPU or the emulator".into(),
        };
        if self.device() == &Device::Cpu {
            return Err(unsupported("cpu"));
        }
        let mut state = self.capture_state();
        if state.is_some() {
            return Err(unsupported("a stream that is already capturing"));
        }
        if let Some(s) = self.cuda() {
            s.begin_capture()?;
        }
        *state = Some(CaptureState::default());
        Ok(())
    }

    /// Ends the capture and returns the graph.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] when the stream was not capturing; a driver failure.
    pub fn end_capture(&self) -> Result<Graph> {
        let state = self
            .capture_state()
            .take()
            .ok_or_else(|| RetentionError::Unsupported {
                what: "end of graph capture".into(),
                value: "a stream that is not capturing".into(),
                reason: "call begin_capture first".into(),
            })?;
        let inner = match self.cuda() {
            Some(s) => GraphInner::Cuda(s.end_capture()?),
            None => GraphInner::Emulated(state.work),
        };
        Ok(Graph {
            stream: self.clone(),
            inner,
            alive: state.alive,
        })
    }
}

impl Graph {
    /// Replays the captured work on its stream.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] when memory the graph uses was freed (its state pool or
    /// a tensor was dropped); otherwise as the captured launches.
    pub fn replay(&self) -> Result<()> {
        if self.alive.iter().any(|w| w.strong_count() == 0) {
            return Err(RetentionError::Unsupported {
                what: "graph replay".into(),
                value: "a graph whose memory was freed".into(),
                reason: "a tensor or state pool the graph uses was dropped".into(),
            });
        }
        match &self.inner {
            GraphInner::Cuda(g) => g.replay(),
            GraphInner::Emulated(work) => {
                let Device::Emulated(arch) = self.stream.device() else {
                    return Err(RetentionError::NoDevice(
                        "an emulated graph off the emulator".into(),
                    ));
                };
                let exec = Executor::Emulator(*arch);
                for w in work {
                    match w {
                        Recorded::Launch(l) => exec.launch(l, &self.stream)?,
                        Recorded::Copy(src, dst) => exec.copy(src, dst, &self.stream)?,
                        Recorded::Zero(dst) => exec.zero(dst, &self.stream)?,
                    }
                }
                Ok(())
            }
        }
    }

    /// Kernel launches in the graph (emulated graphs; `None` on CUDA).
    pub fn launches(&self) -> Option<usize> {
        match &self.inner {
            GraphInner::Emulated(w) => Some(
                w.iter()
                    .filter(|r| matches!(r, Recorded::Launch(_)))
                    .count(),
            ),
            GraphInner::Cuda(_) => None,
        }
    }
}
