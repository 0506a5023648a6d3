//! Printing errors: a located error becomes `file:line:col` + snippet + caret, anything else
//! `error: ...` with its causes.

use kiln::diagnostic::{Located, Span, render};
use std::fmt;

/// An error from a source file, ready to print: with a snippet when it knows its place, and
/// with its help line either way.
#[derive(Debug)]
pub struct SourceError {
    pub file: String,
    pub source_text: String,
    pub span: Option<Span>,
    pub message: String,
    pub help: Option<String>,
}

/// Wraps a front-end error that may know its location in `file` (whose text is `source_text`):
/// with a span it prints as a snippet, without one as `file: message`; its help line follows.
pub fn located<E: Located + fmt::Display>(file: &str, source_text: &str, err: &E) -> anyhow::Error {
    anyhow::Error::new(SourceError {
        file: file.to_string(),
        source_text: source_text.to_string(),
        span: err.span(),
        message: err.to_string(),
        help: err.help(),
    })
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(span) = self.span else {
            write!(f, "error: {}: {}", self.file, self.message)?;
            if let Some(help) = &self.help {
                write!(f, "\n  = help: {help}")?;
            }
            return Ok(());
        };
        let text = render(
            &self.file,
            &self.source_text,
            span,
            &self.message,
            self.help.as_deref(),
        );
        f.write_str(text.trim_end())
    }
}

impl std::error::Error for SourceError {}

/// Prints `err` to stderr.
pub fn print(err: &anyhow::Error) {
    if let Some(located) = err.downcast_ref::<SourceError>() {
        eprintln!("{located}");
        return;
    }
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
