//! `retention`: the command-line tool of the workspace — `run` (retention of tensors from a
//! safetensors file, exact in f64, or `--demo`), `bench` (decode, prefill and the attention
//! comparison, with the machine's own limits measured in the same run), `autotune` (chunk-size
//! sweeps kept in the runtime's autotune cache), `verify` (ptxas and the emulator over the
//! kernel catalog) and `info` (devices, catalog, cache).
//!
//! The tool speaks files, flags and exit codes. It must not know how kernels are written: it
//! computes through `retention_kernels` (reference and CPU kernels), the runtime's devices, and
//! `kernel-gen`'s catalog and emulator as black boxes.
//!
//! Exit codes: 0 success; 1 a self-check (`run --demo`, `verify`) failed; 2 bad input or
//! usage, always with a single line on stderr and no output file left behind.

mod autotune;
mod bench;
mod byte_size;
mod device_arg;
mod dtype_arg;
mod error;
mod exact_round;
mod host_info;
mod info;
mod input_file;
mod model_arg;
mod output_file;
mod progress;
mod random_tensor;
mod run;
mod timing;
mod verify;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

/// RetNet retention from the command line.
#[derive(Debug, Parser)]
#[command(
    name = "retention",
    version,
    about = "RetNet retention from the command line: run, bench, autotune, verify, info"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute retention of q, k, v from a safetensors file and write o (and the final state).
    Run(run::RunArgs),
    /// Benchmark decode, prefill and retention against attention; JSON/Markdown/SVG reports.
    Bench(bench::BenchArgs),
    /// Sweep chunk sizes on the CPU (or catalog kernels in the emulator); cache every timing.
    Autotune(autotune::AutotuneArgs),
    /// Check every catalog kernel with ptxas (when found) and the emulator against the reference.
    Verify(verify::VerifyArgs),
    /// Show the devices found, the kernel catalog and the autotune cache.
    Info(info::InfoArgs),
}

/// The first paragraph of a message joined into one line, so every failure is one greppable
/// stderr line (clap puts e.g. the names of missing arguments on the lines below its title).
fn one_line(message: &str) -> String {
    let line = message
        .trim_start()
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "unknown error".to_string()
    } else {
        line
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            return match e.kind() {
                // Help and version (exit 0) and the bare-command help (exit 2) are meant to be
                // read in full.
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
                _ => {
                    eprintln!("{}", one_line(&e.to_string()));
                    ExitCode::from(2)
                }
            };
        }
    };
    let result = match &cli.command {
        Command::Run(args) => run::execute(args),
        Command::Bench(args) => bench::execute(args),
        Command::Autotune(args) => autotune::execute(args),
        Command::Verify(args) => verify::execute(args),
        Command::Info(args) => {
            info::execute(args);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn one_line_joins_the_first_paragraph() {
        assert_eq!(one_line("\n  error: x  \n\nmore"), "error: x");
        assert_eq!(
            one_line("error: missing:\n  --form <FORM>\n\nUsage: …"),
            "error: missing: --form <FORM>"
        );
        assert_eq!(one_line(""), "unknown error");
    }
}
