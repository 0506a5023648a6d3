//! Printing errors: a front-end error is rendered by [`render_error`] (`file:line:col` + snippet
//! + caret + help); anything else prints as `error: ...` with its causes.

use kiln::frontend::diagnostic::{Located, render_error};
use std::fmt;

/// A front-end error already rendered for printing.
#[derive(Debug)]
pub struct SourceError(String);

/// Wraps a front-end error from `file` (whose text is `source_text`) for printing.
pub fn located<E: Located + fmt::Display + ?Sized>(
    file: &str,
    source_text: &str,
    err: &E,
) -> anyhow::Error {
    anyhow::Error::new(SourceError(render_error(file, source_text, err)))
}

/// Wraps an error that belongs to no source file (e.g. a missing build context) for printing:
/// `error: message` and its help line.
pub fn unlocated<E: Located + fmt::Display + ?Sized>(err: &E) -> anyhow::Error {
    let mut text = format!("error: {err}");
    if let Some(help) = err.help() {
        text.push_str(&format!("\n  = help: {help}"));
    }
    anyhow::Error::new(SourceError(text))
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.trim_end())
    }
}

impl std::error::Error for SourceError {}

/// Prints `err` to stderr.
pub fn print(err: &anyhow::Error) {
    if let Some(located) = err.downcast_ref::<SourceError>() {
        eprintln!("{located}");
        return;
    }
    eprint!("{}", plain_report(err));
}

/// `error: MESSAGE` and a `caused by:` line per cause the message does not already say (most
/// messages embed their source's, which would otherwise be printed again, once per level).
fn plain_report(err: &anyhow::Error) -> String {
    let message = err.to_string();
    let mut report = format!("error: {message}\n");
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            report.push_str(&format!("  caused by: {cause}\n"));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Layered {
        #[error("outer: {0}")]
        Embeds(#[source] Box<Layered>),
        #[error("outer without detail")]
        Hides(#[source] Box<Layered>),
        #[error("the root cause")]
        Root,
    }

    #[test]
    fn causes_the_message_already_says_are_not_repeated() {
        let cases = [
            (
                Layered::Embeds(Box::new(Layered::Embeds(Box::new(Layered::Root)))),
                "error: outer: outer: the root cause\n",
            ),
            (
                Layered::Hides(Box::new(Layered::Root)),
                "error: outer without detail\n  caused by: the root cause\n",
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(plain_report(&anyhow::Error::new(err)), expected);
        }
    }
}
