//! The ptxas lane (ARCHITECTURE §4.1): find `ptxas`, assemble PTX with `-v`, and read back
//! registers, spills, shared and constant memory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::{Arch, GenError};

/// Resource usage of one entry as `ptxas -v` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtxasInfo {
    /// Registers per thread.
    pub registers: u32,
    /// Bytes of spill stores.
    pub spill_store_bytes: u32,
    /// Bytes of spill loads.
    pub spill_load_bytes: u32,
    /// Bytes of stack frame.
    pub stack_frame_bytes: u32,
    /// Bytes of static shared memory.
    pub shared_bytes: u32,
    /// Bytes of constant bank 0 (kernel parameters and driver constants); `None` where ptxas
    /// does not report it (sm_90 passes parameters outside bank 0 and prints no figure).
    pub constant_bytes: Option<u32>,
    /// Named barriers used.
    pub barriers: u32,
}

impl PtxasInfo {
    /// Whether any register spilled to local memory.
    pub fn spills(&self) -> bool {
        self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }
}

/// `ptxas` from `RETENTION_PTXAS`, else from `PATH`; `None` when neither has an executable.
pub fn find_ptxas() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RETENTION_PTXAS") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("ptxas"))
        .find(|p| p.is_file())
}

fn number_before(text: &str, suffix: &str) -> Option<u32> {
    let end = text.find(suffix)?;
    text[..end].split_whitespace().last()?.parse().ok()
}

/// Parse the `-v` report of a single-entry module.
pub fn parse_verbose(report: &str) -> PtxasInfo {
    let mut info = PtxasInfo::default();
    for line in report.lines() {
        if line.contains("spill stores") {
            info.stack_frame_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            info.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
            info.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            info.registers = number_before(line, "registers").unwrap_or(0);
            info.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            info.constant_bytes = number_before(line, "bytes cmem[0]");
            info.barriers = number_before(line, "barriers").unwrap_or(0);
        }
    }
    info
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Assemble `ptx` for `arch` with `ptxas -v`, discarding the cubin.
///
/// # Errors
/// [`GenError::Ptxas`] when ptxas cannot run or rejects the module (with its messages), or
/// [`GenError::Io`] when the scratch files cannot be written.
pub fn assemble(ptxas: &Path, ptx: &str, arch: Arch) -> Result<PtxasInfo, GenError> {
    let stem = format!(
        "kernel-gen-{}-{}",
        std::process::id(),
        SCRATCH.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir();
    let (src, out) = (
        dir.join(format!("{stem}.ptx")),
        dir.join(format!("{stem}.cubin")),
    );
    std::fs::write(&src, ptx).map_err(|e| GenError::Io(format!("{}: {e}", src.display())))?;
    let result = Command::new(ptxas)
        .arg("-v")
        .arg(format!("-arch={}", arch.name()))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output();
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&out);
    let output =
        result.map_err(|e| GenError::Ptxas(format!("cannot run {}: {e}", ptxas.display())))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() || report.contains("error") {
        return Err(GenError::Ptxas(report.trim().to_string()));
    }
    Ok(parse_verbose(&report))
}

/// Assemble many modules on all cores (ptxas is single-threaded); results keep input order.
pub fn assemble_all(ptxas: &Path, modules: &[(String, Arch)]) -> Vec<Result<PtxasInfo, GenError>> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<PtxasInfo, GenError>>>> = modules
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(modules.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((ptx, arch)) = modules.get(i) else {
                        break;
                    };
                    let r = assemble(ptxas, ptx, *arch);
                    *results[i]
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unwrap_or_else(|| Err(GenError::Ptxas("worker did not finish".into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sm80_and_sm90_reports() {
        let sm80 = "ptxas info    : Compiling entry function 'k' for 'sm_80'
ptxas info    : Function properties for k
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 4608 bytes smem, 408 bytes cmem[0]";
        assert_eq!(
            parse_verbose(sm80),
            PtxasInfo {
                registers: 40,
                spill_store_bytes: 4,
                spill_load_bytes: 12,
                stack_frame_bytes: 8,
                shared_bytes: 4608,
                constant_bytes: Some(408),
                barriers: 1,
            }
        );
        let sm90 = "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 1 barriers, 4608 bytes smem";
        let info = parse_verbose(sm90);
        assert_eq!(
            (info.registers, info.constant_bytes, info.spills()),
            (30, None, false)
        );
    }
}
