//! Backward of the chunkwise / recurrent forms: dQ, dK, dV, dH0 given dO and dH_T.

use retention_core::HostTensor;

/// Gradients of retention with respect to its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// dL/dq `[B, T, H, K]`.
    pub dq: HostTensor<f64>,
    /// dL/dk `[B, T, H, K]`.
    pub dk: HostTensor<f64>,
    /// dL/dv `[B, T, H, V]`.
    pub dv: HostTensor<f64>,
    /// dL/dH0 `[B, H, K, V]`.
    pub dh0: HostTensor<f64>,
}
