//! `kiln parse`: print a Dockerfile's syntax tree.

use super::located;
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln::frontend::limits;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// The Dockerfile to parse (`-` reads standard input).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: PathBuf,
    /// Output format: `buildkit` is BuildKit's `Node.Dump()`; `json` adds spans, flags and heredoc
    /// bodies.
    #[arg(long, value_enum, default_value_t = Format::Buildkit)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Buildkit,
    Json,
}

pub fn run(args: ParseArgs) -> anyhow::Result<()> {
    let (name, bytes) = read_dockerfile(&args.file)?;
    let text = String::from_utf8_lossy(&bytes);
    let dockerfile = kiln::frontend::parse(&bytes).map_err(|e| located(&name, &text, &e))?;
    match args.format {
        Format::Buildkit => super::term::write_stdout(&dockerfile.dump())?,
        Format::Json => {
            super::term::write_json(&format!("{}\n", serde_json::to_string_pretty(&dockerfile)?))?
        }
    }
    Ok(())
}

/// Reads a Dockerfile from a path (a file, a FIFO, a device) or, for `-`, standard input, at
/// most [`kiln::frontend::limits::MAX_DOCKERFILE_BYTES`]. Returns the name to print in errors
/// and the raw bytes (the parser checks the encoding and reports where it breaks).
pub fn read_dockerfile(path: &std::path::Path) -> anyhow::Result<(String, Vec<u8>)> {
    if path.as_os_str() == "-" {
        let name = "<stdin>";
        let bytes = limits::read_dockerfile(std::io::stdin().lock(), name)?;
        return Ok((name.to_string(), bytes));
    }
    let name = kiln::error::escape_controls(&path.display().to_string());
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read the Dockerfile {name}"))?;
    let bytes = limits::read_dockerfile(file, &name)?;
    Ok((path.display().to_string(), bytes))
}
