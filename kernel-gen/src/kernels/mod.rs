//! Retention kernel generators, one file per kernel, each validating its spec first.

pub mod decay;
pub mod decode;
