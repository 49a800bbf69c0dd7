//! An output buffer that parallel tasks write through disjoint row ranges.
//!
//! Outputs are token-major (`[B, T, H, V]`), so one head's rows are interleaved with every
//! other head's: no `chunks_mut` split hands each (b, h) task its rows. Tasks instead get
//! this handle and promise, per call site, that the ranges they write never overlap.

use std::marker::PhantomData;

/// A `&mut [T]` shared between tasks that write disjoint ranges of it.
pub(crate) struct SharedOut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: the handle only hands out `&mut` ranges through `rows`, whose contract requires
// the ranges used concurrently to be disjoint; with T: Send, that is sound across threads.
unsafe impl<T: Send> Sync for SharedOut<'_, T> {}
// SAFETY: as above — moving the handle to another thread moves only the exclusive borrow.
unsafe impl<T: Send> Send for SharedOut<'_, T> {}

impl<'a, T> SharedOut<'a, T> {
    /// Borrow `data` exclusively for the lifetime of the handle.
    pub fn new(data: &'a mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _borrow: PhantomData,
        }
    }

    /// The range `offset..offset + len`.
    ///
    /// # Safety
    /// No other live reference (from this or any other thread) may overlap the range while
    /// the returned slice is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn rows(&self, offset: usize, len: usize) -> &mut [T] {
        assert!(
            offset <= self.len && len <= self.len - offset,
            "range outside the output"
        );
        // SAFETY: in bounds (asserted above) of a buffer exclusively borrowed for 'a; the
        // caller guarantees no overlapping reference is alive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}
