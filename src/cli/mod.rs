//! Command-line interface: argument parsing (clap) and one module per subcommand. Errors are
//! `anyhow` here; front-end errors that carry a span are printed as a snippet.

mod build;
mod parse;
mod report;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub use report::{located, unlocated};

/// kiln builds container images from Dockerfiles.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image from a Dockerfile (for now: `--dry-run`, which prints the build plan).
    Build(build::BuildArgs),
    /// Parse a Dockerfile and print its syntax tree.
    Parse(parse::ParseArgs),
}

/// Runs the command line and turns any error into a message on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::run(args),
        Command::Parse(args) => parse::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::print(&err);
            ExitCode::FAILURE
        }
    }
}
