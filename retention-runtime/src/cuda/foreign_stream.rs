//! A [`Stream`] over a CUDA stream another library owns (PyTorch's current stream, a C
//! caller's `CUstream`), through cudarc's `CudaContext::wrap_borrowed_stream`: work queued
//! here runs in that stream's order, and dropping the wrapper never destroys the stream.

use cudarc::driver::sys::CUstream;

use super::stream::Stream;

impl Stream {
    /// A stream of this stream's device and context over `raw`, a stream the caller owns.
    ///
    /// # Safety
    /// `raw` is a valid CUDA stream of this device's primary context (the context every
    /// stream of this runtime uses, and PyTorch's), kept alive by its owner for as long as the
    /// returned stream or anything recorded with it is used. Ordering work on it against
    /// other streams is the caller's business.
    pub(crate) unsafe fn borrow_foreign(&self, raw: CUstream) -> Stream {
        // SAFETY: forwarded precondition: `raw` belongs to this context and outlives the use.
        Stream::new(unsafe { self.inner.context().wrap_borrowed_stream(raw) })
    }
}
