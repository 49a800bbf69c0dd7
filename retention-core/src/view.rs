//! Borrowed tensors: a shape over elements someone else owns — a [`HostTensor`]'s, or memory
//! a caller hands over (a framework's buffer, a device API's host-memory tensor) — so the CPU
//! kernels read inputs and write outputs in place, without allocating or copying.

use crate::{Element, HostTensor, Result, RetentionError};

fn check_len(name: &str, shape: &[usize], len: usize) -> Result<()> {
    let needed: usize = shape.iter().product();
    if needed == len {
        Ok(())
    } else {
        Err(RetentionError::DataLength {
            tensor: name.into(),
            len,
            shape: shape.to_vec(),
            needed,
        })
    }
}

/// A read-only contiguous row-major tensor over borrowed elements.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a, T> {
    shape: &'a [usize],
    data: &'a [T],
}

impl<'a, T: Element> TensorView<'a, T> {
    /// `data` seen with `shape`.
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] (naming `name`) when `data.len()` is not the product
    /// of `shape`.
    pub fn new(name: &str, shape: &'a [usize], data: &'a [T]) -> Result<Self> {
        check_len(name, shape, data.len())?;
        Ok(Self { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> &'a [usize] {
        self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}

/// A writable contiguous row-major tensor over borrowed elements.
#[derive(Debug)]
pub struct TensorViewMut<'a, T> {
    shape: &'a [usize],
    data: &'a mut [T],
}

impl<'a, T: Element> TensorViewMut<'a, T> {
    /// `data` seen with `shape`.
    ///
    /// # Errors
    /// As [`TensorView::new`].
    pub fn new(name: &str, shape: &'a [usize], data: &'a mut [T]) -> Result<Self> {
        check_len(name, shape, data.len())?;
        Ok(Self { shape, data })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        self.data
    }

    /// The elements, writable.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }
}

impl<T: Element> HostTensor<T> {
    /// This tensor as a [`TensorView`].
    pub fn view(&self) -> TensorView<'_, T> {
        TensorView {
            shape: self.shape(),
            data: self.data(),
        }
    }

    /// This tensor as a [`TensorViewMut`].
    pub fn view_mut(&mut self) -> TensorViewMut<'_, T> {
        let (shape, data) = self.shape_and_data_mut();
        TensorViewMut { shape, data }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_their_length_and_see_the_tensor() {
        let shape = [2, 3];
        let data = [0.0f32; 6];
        assert!(TensorView::new("x", &shape, &data).is_ok());
        assert!(matches!(
            TensorView::new("x", &shape, &data[..5]),
            Err(RetentionError::DataLength {
                needed: 6,
                len: 5,
                ..
            })
        ));
        let mut t = HostTensor::<f32>::zeros(vec![2, 2]);
        t.view_mut().data_mut()[3] = 7.0;
        assert_eq!(t.view().data(), &[0.0, 0.0, 0.0, 7.0]);
        assert_eq!(t.view().shape(), &[2, 2]);
    }
}
