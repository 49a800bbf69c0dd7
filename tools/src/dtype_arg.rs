//! `--dtype f32|f16|bf16`: the input dtype of a measurement (state is always f32).

use clap::ValueEnum;

/// An input dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl DtypeArg {
    /// The workspace dtype.
    pub fn dtype(self) -> retention_core::Dtype {
        match self {
            DtypeArg::F32 => retention_core::Dtype::F32,
            DtypeArg::F16 => retention_core::Dtype::F16,
            DtypeArg::Bf16 => retention_core::Dtype::Bf16,
        }
    }

    /// The name reports and cache keys use.
    pub fn name(self) -> &'static str {
        match self {
            DtypeArg::F32 => "f32",
            DtypeArg::F16 => "f16",
            DtypeArg::Bf16 => "bf16",
        }
    }
}
