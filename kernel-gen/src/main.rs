//! `kernel-gen`: write the kernel catalog (one `.ptx` per spec plus `manifest.json`), or run
//! a PTX file in the emulator (`kernel-gen emu FILE.ptx --launch LAUNCH.json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use kernel_gen::Arch;
use kernel_gen::catalog::default_catalog;
use kernel_gen::manifest::write_catalog;
use kernel_gen::ptxas::find_ptxas;

/// Generate the retention kernel catalog, or emulate a PTX launch.
#[derive(Debug, Parser)]
#[command(
    name = "kernel-gen",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    generate: GenerateArgs,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Directory to write `<spec>.ptx` files and `manifest.json` into.
    #[arg(long)]
    out: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a PTX file in the emulator with a JSON launch description; print the report.
    Emu {
        /// The PTX module.
        ptx: PathBuf,
        /// The launch description (entry, grid, block, params with buffer files).
        #[arg(long)]
        launch: PathBuf,
    },
}

fn generate(args: &GenerateArgs) -> ExitCode {
    let Some(out) = &args.out else {
        eprintln!("kernel-gen: --out DIR is required (or use the `emu` subcommand)");
        return ExitCode::from(2);
    };
    let specs: Vec<_> = default_catalog()
        .into_iter()
        .filter(|s| args.arch.is_empty() || args.arch.contains(&s.arch))
        .filter(|s| {
            args.filter
                .as_ref()
                .is_none_or(|f| s.slug().contains(f.as_str()))
        })
        .collect();
    let ptxas = if args.no_ptxas { None } else { find_ptxas() };
    if ptxas.is_none() && !args.no_ptxas {
        eprintln!("notice: ptxas not found (set RETENTION_PTXAS); manifest has no register counts");
    }
    let start = Instant::now();
    match write_catalog(&specs, out, ptxas.as_deref()) {
        Ok(m) => {
            eprintln!(
                "wrote {} kernels and manifest.json to {} in {:.3} s{}",
                m.kernels.len(),
                out.display(),
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

fn emulate(ptx: &std::path::Path, launch: &std::path::Path) -> ExitCode {
    let report = kernel_gen::emu::run_launch_files(ptx, launch)
        .map_err(|e| e.to_string())
        .and_then(|r| serde_json::to_string_pretty(&r).map_err(|e| e.to_string()));
    match report {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kernel-gen emu: {}", e.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Emu { ptx, launch }) => emulate(ptx, launch),
        None => generate(&cli.generate),
    }
}
