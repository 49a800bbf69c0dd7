//! A contiguous row-major tensor in host memory.

use crate::shape::check_shape;
use crate::{Element, Result, RetentionError};

/// Shape plus contiguous row-major data. The unit every API takes and returns on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor<T: Element> {
    shape: Vec<usize>,
    data: Vec<T>,
}

impl<T: Element> HostTensor<T> {
    /// Wrap data with a shape.
    ///
    /// # Errors
    /// [`RetentionError::DataLength`] when `data.len()` is not the product of `shape`.
    pub fn new(shape: impl Into<Vec<usize>>, data: Vec<T>) -> Result<Self> {
        let shape = shape.into();
        let needed: usize = shape.iter().product();
        if needed != data.len() {
            return Err(RetentionError::DataLength {
                tensor: "tensor".into(),
                len: data.len(),
                shape,
                needed,
            });
        }
        Ok(Self { shape, data })
    }

    /// A zero-filled tensor.
    pub fn zeros(shape: impl Into<Vec<usize>>) -> Self {
        let shape = shape.into();
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![T::default(); n],
        }
    }

    /// Build from f64 values, rounding each to `T`.
    ///
    /// # Errors
    /// As [`HostTensor::new`].
    pub fn from_f64(shape: impl Into<Vec<usize>>, data: &[f64]) -> Result<Self> {
        Self::new(shape, data.iter().map(|&x| T::from_f64(x)).collect())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Mutable elements.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The shape and the writable elements at once (for a mutable view).
    pub(crate) fn shape_and_data_mut(&mut self) -> (&[usize], &mut [T]) {
        (&self.shape, &mut self.data)
    }

    /// Take the elements.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a tensor with a zero-sized axis.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Raw little-endian bytes of the elements.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.data)
    }

    /// Widen every element to f64.
    pub fn to_f64(&self) -> HostTensor<f64> {
        HostTensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|x| x.to_f64()).collect(),
        }
    }

    /// Convert every element to another element type (via f64, round to nearest even).
    pub fn cast<U: Element>(&self) -> HostTensor<U> {
        HostTensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(|x| U::from_f64(x.to_f64())).collect(),
        }
    }

    /// Check this tensor is `name` with the given named axes, e.g.
    /// `q.expect_shape("q", &["B", "T", "H", "K"], &[2, 5, 4, 8])`.
    ///
    /// # Errors
    /// [`RetentionError::ShapeMismatch`] naming every axis of both shapes.
    pub fn expect_shape(&self, name: &str, axes: &[&str], dims: &[usize]) -> Result<()> {
        check_shape(name, axes, &self.shape, dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn construction_checks_length() {
        assert!(HostTensor::<f32>::new(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(matches!(
            HostTensor::<f32>::new(vec![2, 3], vec![0.0; 5]),
            Err(RetentionError::DataLength {
                needed: 6,
                len: 5,
                ..
            })
        ));
        let t = HostTensor::<bf16>::from_f64(vec![2], &[1.0, 3.0]).unwrap();
        assert_eq!(t.as_bytes().len(), 4);
        assert_eq!(t.to_f64().data(), &[1.0, 3.0]);
    }

    #[test]
    fn shape_errors_name_axes() {
        let t = HostTensor::<f64>::zeros(vec![1, 4, 2, 8]);
        let err = t
            .expect_shape("q", &["B", "T", "H", "K"], &[1, 4, 8, 2])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("H=8") && msg.contains("H=2") && msg.contains("`q`"),
            "{msg}"
        );
    }
}
