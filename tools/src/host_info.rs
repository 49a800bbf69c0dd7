//! What the host CPU is: its model name and thread count, for reports and cache keys.

pub use retention_runtime::autotune_cache::cpu_model;

/// Threads the CPU kernels run on (the rayon pool).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `AMD EPYC, 2 threads`.
pub fn describe_cpu() -> String {
    format!("{}, {} threads", cpu_model(), threads())
}
