//! Entering kiln's rootless namespace at start: an unprivileged user with subordinate id ranges
//! becomes root of a user namespace mapping them (`kiln::sys::privilege`), before any thread
//! exists; without a range, kiln keeps one id and says once what is missing, for the commands
//! where owners matter.

use super::term::errln;
use anyhow::Context as _;
use kiln::sys::privilege::{self, Rootless};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

/// What a command does with the rootless namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing in it touches layers or sandboxes (`parse`, `login`, `info`).
    None,
    /// It reads or removes stored files (`images`, `rmi`, `prune`, `save`…): enter, no warning.
    Quiet,
    /// It unpacks layers or runs sandboxes (`build`, `run`, `load`, `pull`, `import`): enter,
    /// and warn when only one id can be used.
    Owners,
}

/// Enters the namespace when `need` asks for it (printing the fallback's warning for
/// [`Need::Owners`]), then makes the rootless store's default directory `default_root`, private
/// (0700), when kiln is not real root and it does not exist yet.
pub fn enter(need: Need, default_root: Option<&Path>) -> anyhow::Result<()> {
    if need == Need::None {
        return Ok(());
    }
    match privilege::enter_rootless().context("entering kiln's rootless user namespace")? {
        Rootless::Fallback(missing) if need == Need::Owners => {
            let _ = errln!("warning: {missing}");
        }
        // Denied: sandboxes say so themselves when one is needed.
        Rootless::NotNeeded
        | Rootless::Entered(_)
        | Rootless::Fallback(_)
        | Rootless::Denied(_) => {}
    }
    if let Some(root) = default_root
        && privilege::real_uid() != 0
        && !root.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("creating the store directory {}", root.display()))?;
    }
    Ok(())
}
