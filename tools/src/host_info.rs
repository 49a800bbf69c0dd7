//! What the host CPU is: its model name and thread count, for reports and cache keys.

/// The CPU's model name from `/proc/cpuinfo`, or the target architecture when unavailable.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| model_name(&text))
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The first `model name` line's value.
fn model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name" && !value.trim().is_empty()).then(|| value.trim().to_string())
    })
}

/// Threads the CPU kernels run on (the rayon pool).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `AMD EPYC, 2 threads`.
pub fn describe_cpu() -> String {
    format!("{}, {} threads", cpu_model(), threads())
}

#[cfg(test)]
mod tests {
    use super::model_name;

    #[test]
    fn reads_the_first_model_name() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(model_name(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(model_name("processor : 0\n"), None);
        assert_eq!(model_name("model name :   \n"), None);
    }
}
