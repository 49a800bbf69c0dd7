//! Little-endian encoding of f64 results rounded once to the output dtype (the rounding
//! itself is `retention_core`'s correctly rounded narrowing).

use retention_core::{Dtype, f64_to_bf16_bits, f64_to_f16_bits};

/// Little-endian bytes of `values` rounded once to `dtype`.
pub fn encode(dtype: Dtype, values: &[f64]) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values
            .iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&x| f64_to_f16_bits(x).to_le_bytes())
            .collect(),
        Dtype::Bf16 => values
            .iter()
            .flat_map(|&x| f64_to_bf16_bits(x).to_le_bytes())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_writes_little_endian_per_dtype() {
        assert_eq!(encode(Dtype::F32, &[1.0]), 1.0f32.to_le_bytes());
        assert_eq!(encode(Dtype::F16, &[1.0, -2.0]), [0x00, 0x3C, 0x00, 0xC0]);
        assert_eq!(encode(Dtype::Bf16, &[1.0]), [0x80, 0x3F]);
    }
}
