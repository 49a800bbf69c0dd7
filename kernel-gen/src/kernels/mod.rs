//! Retention kernel generators, one file per kernel, each validating its spec first.

pub mod chunkwise;
pub mod chunkwise_fma;
pub mod chunkwise_tc;
pub mod decay;
pub mod decode;
