//! Printing errors: a front-end error is rendered by [`render_error`] (`file:line:col`, snippet,
//! caret and help); anything else prints as `error: ...` with its causes, `a: b: c`, the
//! convention of [`kiln::error`].

use kiln::error::EscapedChain;
use kiln::frontend::diagnostic::{Located, render_error};
use std::fmt;

/// A front-end error already rendered for printing.
#[derive(Debug)]
pub struct SourceError(String);

/// Wraps a front-end error from `file` (whose text is `source_text`) for printing.
pub fn located<E: Located + std::error::Error + ?Sized>(
    file: &str,
    source_text: &str,
    err: &E,
) -> anyhow::Error {
    anyhow::Error::new(SourceError(render_error(file, source_text, err)))
}

/// Wraps an error that belongs to no source file (e.g. a missing build context) for printing:
/// `error: message` and its help line.
pub fn unlocated<E: Located + std::error::Error + ?Sized>(err: &E) -> anyhow::Error {
    let mut text = format!("error: {}", EscapedChain(err));
    if let Some(help) = err.help() {
        text.push_str(&format!("\n  = help: {}", kiln::error::escape_line(&help)));
    }
    anyhow::Error::new(SourceError(text))
}

impl SourceError {
    /// An error already rendered (`error: ...`, snippet and help).
    pub fn new(rendered: String) -> SourceError {
        SourceError(rendered)
    }
}

/// A failure whose reason is already printed (e.g. `--check` findings): the command exits 1
/// and prints nothing more.
#[derive(Debug)]
pub struct ExitQuietly;

impl fmt::Display for ExitQuietly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("exit status 1")
    }
}

impl std::error::Error for ExitQuietly {}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for SourceError {}

/// Prints `err` to stderr, its control characters escaped ([`super::term::write_stderr`]): a
/// message may quote what came from outside (a Dockerfile or a file name from a git repository,
/// a server's reply). A plain error's chain is one line whatever its links hold: each link is
/// escaped whole, newlines included ([`EscapedChain`]); a rendered snippet keeps its own lines.
pub fn print(err: &anyhow::Error) {
    if err.downcast_ref::<ExitQuietly>().is_some() {
        return;
    }
    if let Some(located) = err.downcast_ref::<SourceError>() {
        let _ = super::term::write_stderr(&format!("{located}\n"));
        return;
    }
    let _ = super::term::write_stderr(&plain_report(err));
}

/// `error: MESSAGE: CAUSE: CAUSE`: each error of the chain says only its own layer's message
/// ([`kiln::error`]), so the chain is printed docker-style on one line, each cause once.
fn plain_report(err: &anyhow::Error) -> String {
    let err: &(dyn std::error::Error + 'static) = err.as_ref();
    format!("error: {}\n", EscapedChain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Layered {
        #[error("cannot push image")]
        Push(#[source] Box<Layered>),
        #[error("cannot upload blob sha256:abc")]
        Upload(#[source] Box<Layered>),
        #[error("connection refused")]
        Root,
    }

    #[test]
    fn a_three_level_chain_prints_each_message_once_in_order() {
        let err = Layered::Push(Box::new(Layered::Upload(Box::new(Layered::Root))));
        assert_eq!(
            plain_report(&anyhow::Error::new(err)),
            "error: cannot push image: cannot upload blob sha256:abc: connection refused\n"
        );
    }

    #[test]
    fn contexts_added_by_the_cli_are_layers_of_the_chain() {
        let err = anyhow::Error::new(std::io::Error::other("permission denied"))
            .context("cannot read the Dockerfile /x");
        assert_eq!(
            plain_report(&err),
            "error: cannot read the Dockerfile /x: permission denied\n"
        );
    }

    #[test]
    fn a_newline_or_escape_in_any_link_stays_inside_the_error_line() {
        let err = anyhow::Error::new(std::io::Error::other("evil\nerror: fake\x1b[2J"))
            .context("cannot load x\ty");
        assert_eq!(
            plain_report(&err),
            "error: cannot load x\\ty: evil\\nerror: fake\\u{1b}[2J\n"
        );
    }

    #[test]
    fn an_error_without_cause_is_one_line() {
        assert_eq!(
            plain_report(&anyhow::anyhow!("no such image: box:latest")),
            "error: no such image: box:latest\n"
        );
    }
}
