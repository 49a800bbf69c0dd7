//! Byte counts of requested problems, computed without overflow so an absurd shape is refused
//! by a budget check instead of wrapping around or aborting in the allocator.

/// The product of `factors`, saturating at `u64::MAX`.
pub fn saturating_product(factors: &[usize]) -> u64 {
    factors
        .iter()
        .fold(1u64, |acc, &f| acc.saturating_mul(f as u64))
}

#[cfg(test)]
mod tests {
    use super::saturating_product;

    #[test]
    fn saturates_instead_of_wrapping() {
        assert_eq!(saturating_product(&[2, 3, 4]), 24);
        assert_eq!(saturating_product(&[]), 1);
        assert_eq!(saturating_product(&[usize::MAX, usize::MAX, 2]), u64::MAX);
    }
}
