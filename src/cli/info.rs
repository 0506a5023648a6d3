//! `kiln info`: what this machine builds and runs: its platform, and every platform whose RUN
//! steps and containers run here, natively or under an emulator binfmt_misc has registered.

use super::term::out;
use clap::Args;
use kiln::runtime::binfmt::{Emulation, ProcBinfmt, Runnable};
use std::fmt::Write as _;

#[derive(Debug, Args)]
pub struct InfoArgs {}

/// Prints the platforms, one per line: `PLATFORM  native`, `PLATFORM  emulated (ENTRY:
/// INTERPRETER)`, or `PLATFORM  unusable: WHY`.
pub fn info(_args: InfoArgs) -> anyhow::Result<()> {
    let source = ProcBinfmt::default();
    let emulation = Emulation::read_host(&source);
    let mut text = String::new();
    writeln!(text, "Platform: {}", emulation.native)?;
    let binfmt = match emulation.binfmt_enabled {
        None => "not mounted".to_string(),
        Some(true) => "enabled".to_string(),
        Some(false) => "disabled".to_string(),
    };
    writeln!(text, "binfmt_misc: {} ({binfmt})", source.dir.display())?;
    writeln!(text, "Platforms RUN steps and containers run on:")?;
    let listed = emulation.platforms();
    let width = listed
        .iter()
        .map(|(p, _)| p.to_string().len())
        .max()
        .unwrap_or(0);
    for (platform, runnable) in &listed {
        let how = match runnable {
            Runnable::Native => "native".to_string(),
            Runnable::Emulated { name, interpreter } => {
                format!("emulated ({name}: {interpreter})")
            }
            Runnable::No(why) => format!("unusable: {why}"),
        };
        writeln!(text, "  {:<width$}  {how}", platform.to_string())?;
    }
    if !listed
        .iter()
        .any(|(_, r)| matches!(r, Runnable::Emulated { .. }))
    {
        // What a user wanting `--platform linux/arm64` needs to do.
        if let Runnable::No(why) = emulation.runnable(&kiln::oci::Platform::new(
            "linux",
            if emulation.native.architecture == "arm64" {
                "amd64"
            } else {
                "arm64"
            },
            None,
        )) {
            writeln!(text, "No emulator is usable: {why}")?;
        }
    }
    out!("{text}")?;
    Ok(())
}
