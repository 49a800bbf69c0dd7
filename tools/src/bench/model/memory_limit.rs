//! `--memory-limit`: the memory a model may use on the CPU (weights, state or KV cache and
//! activations), in bytes with an optional binary suffix (`512M`, `6G`, `1.5G`). Without it,
//! a quarter of this machine's RAM: the machine is shared, and the sweep allocates up to it.

/// Share of physical memory used when no limit is given.
const DEFAULT_SHARE: u64 = 4;

/// The limit when RAM cannot be read (not Linux).
const FALLBACK: u64 = 4 << 30;

/// Parse `N`, `N K|M|G|T` (binary multiples, optional `iB`/`B`), fractions allowed.
///
/// # Errors
/// A message naming the value when it is not a positive size.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => return Err(format!("unknown unit `{other}` in `{s}` (K, M, G or T)")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. 6G, 512M, 1000000)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is not a positive size"));
    }
    Ok(bytes as u64)
}

/// The default limit and how it was chosen.
pub fn default_limit() -> (u64, String) {
    match total_ram() {
        Some(total) => (
            total / DEFAULT_SHARE,
            format!(
                "memory limit: a quarter of this machine's {:.1} GiB of RAM (--memory-limit \
                 to change it)",
                total as f64 / f64::from(1u32 << 30)
            ),
        ),
        None => (
            FALLBACK,
            "memory limit: 4 GiB (RAM size unknown; --memory-limit to change it)".into(),
        ),
    }
}

/// Physical memory from `/proc/meminfo`.
fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse("1000"), Ok(1000));
        assert_eq!(parse("512M"), Ok(512 << 20));
        assert_eq!(parse("1.5G"), Ok(3 << 29));
        assert_eq!(parse("6 GiB"), Ok(6 << 30));
        assert!(parse("0").is_err());
        assert!(parse("6X").is_err());
        assert!(parse("-1G").is_err());
    }
}
