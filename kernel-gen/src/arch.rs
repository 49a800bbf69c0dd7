//! Target architectures and the PTX ISA version each is emitted with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::GenError;

/// A GPU architecture the catalog targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Arch {
    /// Ampere (A100): `.target sm_80`.
    #[serde(rename = "sm_80")]
    Sm80,
    /// Hopper (H100): `.target sm_90`.
    #[serde(rename = "sm_90")]
    Sm90,
}

impl Arch {
    /// Every architecture, oldest first.
    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90];

    /// Most dynamic shared memory one CTA may opt into.
    pub const fn max_dynamic_shared(self) -> u32 {
        match self {
            Arch::Sm80 => 163 * 1024,
            Arch::Sm90 => 227 * 1024,
        }
    }

    /// SMs of the GPU the arch's catalog is tuned for (A100: 108, H100 SXM: 132): what launch
    /// plans fill.
    pub const fn sm_count(self) -> u32 {
        match self {
            Arch::Sm80 => 108,
            Arch::Sm90 => 132,
        }
    }

    /// The `.target` name, also passed to `ptxas -arch`.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }

    /// The `.version` directive: 8.0 is the oldest ISA that knows sm_90 and every instruction
    /// we emit, and the CUDA 12.0 driver JIT accepts it, so both targets share it.
    pub const fn ptx_version(self) -> &'static str {
        match self {
            Arch::Sm80 | Arch::Sm90 => "8.0",
        }
    }

    /// Whether `add/sub/mul.bf16` exist natively (sm_90); on sm_80 they legalise to `fma`.
    pub const fn has_bf16_arith(self) -> bool {
        matches!(self, Arch::Sm90)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = GenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sm_80" | "sm80" | "80" => Ok(Arch::Sm80),
            "sm_90" | "sm90" | "90" => Ok(Arch::Sm90),
            other => Err(GenError::UnsupportedSpec {
                what: "arch",
                value: other.into(),
                reason: "expected sm_80 or sm_90".into(),
            }),
        }
    }
}
