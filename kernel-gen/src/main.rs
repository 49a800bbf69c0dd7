//! `kernel-gen`: write the kernel catalog (one `.ptx` per spec plus `manifest.json`), or run
//! a PTX file in the emulator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use kernel_gen::Arch;
use kernel_gen::catalog::default_catalog;
use kernel_gen::manifest::write_catalog;
use kernel_gen::ptxas::find_ptxas;

/// Generate the retention kernel catalog.
#[derive(Debug, Parser)]
#[command(name = "kernel-gen", version, about)]
struct Cli {
    /// Directory to write `<spec>.ptx` files and `manifest.json` into.
    #[arg(long)]
    out: PathBuf,
    /// Only these architectures (repeatable or comma-separated: sm_80,sm_90).
    #[arg(long, value_delimiter = ',')]
    arch: Vec<Arch>,
    /// Only specs whose name (e.g. `decode_k64_v128_retnet8_f16_sm_80`) contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Do not run ptxas even when it is found.
    #[arg(long)]
    no_ptxas: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let specs: Vec<_> = default_catalog()
        .into_iter()
        .filter(|s| cli.arch.is_empty() || cli.arch.contains(&s.arch))
        .filter(|s| {
            cli.filter
                .as_ref()
                .is_none_or(|f| s.slug().contains(f.as_str()))
        })
        .collect();
    let ptxas = if cli.no_ptxas { None } else { find_ptxas() };
    if ptxas.is_none() && !cli.no_ptxas {
        eprintln!("notice: ptxas not found (set RETENTION_PTXAS); manifest has no register counts");
    }
    let start = Instant::now();
    match write_catalog(&specs, &cli.out, ptxas.as_deref()) {
        Ok(m) => {
            eprintln!(
                "wrote {} kernels and manifest.json to {} in {:.3} s{}",
                m.kernels.len(),
                cli.out.display(),
                start.elapsed().as_secs_f64(),
                if ptxas.is_some() {
                    " (including ptxas)"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kernel-gen: {e}");
            ExitCode::from(2)
        }
    }
}
