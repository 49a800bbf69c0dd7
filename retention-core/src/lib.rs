//! The shared vocabulary of the `retention` workspace: element types ([`Dtype`]), per-head
//! decays ([`Gammas`]), problem shapes ([`RetentionShape`]), contiguous host tensors
//! ([`HostTensor`], borrowed as [`TensorView`] / [`TensorViewMut`]) and the one error type
//! every public function returns ([`RetentionError`]).
//!
//! Every other crate (the kernel generator, the kernels, the runtime, the tools) speaks these
//! types, which is why they live below all of them. This crate must not know about kernels,
//! PTX, devices, streams or any way of computing retention: it only describes problems and
//! validates them.

mod dtype;
mod error;
mod gammas;
mod rng;
mod round;
mod shape;
mod tensor;
mod view;

pub use dtype::{Dtype, Element};
pub use error::{Result, RetentionError};
pub use gammas::Gammas;
pub use rng::SplitMix64;
pub use round::{f64_to_bf16_bits, f64_to_f16_bits};
pub use shape::{CuSeqlens, RetentionShape, check_shape, default_scale, validate_scale};
pub use tensor::HostTensor;
pub use view::{TensorView, TensorViewMut};
