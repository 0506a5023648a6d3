//! Source positions and the error snippet every front-end error prints.
//!
//! All front-end errors (Dockerfile syntax, instructions, word expansion, .dockerignore) carry a
//! [`Span`] and render the same way, like rustc or uv:
//!
//! ```text
//! error: unknown instruction "FORM"
//!  --> Dockerfile:3:1
//!   |
//! 3 | FORM alpine
//!   | ^^^^
//!   = help: did you mean FROM?
//! ```

use serde::Serialize;
use std::fmt::Write as _;

/// How many characters of the offending line a snippet shows (the parser accepts lines of up to
/// 64 KiB; a snippet of one would be unreadable).
pub const SNIPPET_MAX_CHARS: usize = 200;

/// A place in a source file. Both numbers are 1-based; `column` counts characters, not bytes, so
/// it matches what an editor shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub const fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }
}

/// A range in a source file, `start` inclusive, `end` exclusive on the column (a zero-width span
/// has `start == end`). An instruction that continues over several lines spans all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Span {
    pub start: Position,
    pub end: Position,
}

impl Span {
    pub const fn new(start: Position, end: Position) -> Self {
        Self { start, end }
    }

    /// A span of `len` characters on one line.
    pub const fn on_line(line: usize, column: usize, len: usize) -> Self {
        Self {
            start: Position::new(line, column),
            end: Position::new(line, column + len),
        }
    }

    /// A span that marks a whole line (column 1, no width: the caret goes under the first
    /// character).
    pub const fn line(line: usize) -> Self {
        Self::on_line(line, 1, 0)
    }
}

/// An error that knows where in a source file it happened, so the CLI can print a snippet.
pub trait Located {
    /// Where the error is, when it is tied to a place in the file.
    fn span(&self) -> Option<Span>;
    /// One line that tells the user what to do about it.
    fn help(&self) -> Option<String> {
        None
    }
}

/// Renders `message` with the location `file:line:col`, the offending source line and a caret
/// (one `^` per character of the span on its first line, at least one), and an optional help
/// line. `source` is the whole file; lines that do not exist (a span past the end) print no
/// snippet, only the location. Tabs are kept so the caret lines up with the text as printed.
pub fn render(file: &str, source: &str, span: Span, message: &str, help: Option<&str>) -> String {
    render_as("error", file, source, span, message, help)
}

/// [`render`] with another label than `error` (`warning` for a build check's finding).
pub fn render_as(
    label: &str,
    file: &str,
    source: &str,
    span: Span,
    message: &str,
    help: Option<&str>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{label}: {message}");
    let line_no = span.start.line;
    let _ = writeln!(out, " --> {file}:{}:{}", line_no, span.start.column);
    if let Some(text) = source_line(source, line_no) {
        let gutter = line_no.to_string().len();
        let pad = " ".repeat(gutter);
        let shown: String = text.chars().take(SNIPPET_MAX_CHARS).collect();
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line_no} | {shown}");
        let col = span.start.column.max(1);
        // A caret past the cut has nothing to point at; the location line gives the column.
        if col <= SNIPPET_MAX_CHARS {
            // Indent the caret with the line's own whitespace characters so tabs line up.
            let indent: String = shown
                .chars()
                .take(col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let width = if span.end.line == span.start.line && span.end.column > span.start.column {
                span.end.column - span.start.column
            } else {
                1
            };
            let width = width.min(SNIPPET_MAX_CHARS + 1 - col);
            let _ = writeln!(out, "{pad} | {indent}{}", "^".repeat(width));
        }
        if let Some(help) = help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
    } else if let Some(help) = help {
        let _ = writeln!(out, "  = help: {help}");
    }
    out
}

/// Renders any front-end error the way kiln prints it: with [`render`]'s snippet when the error
/// has a span, else `error: FILE: message` and its help line. The message is the error with its
/// causes, `a: b: c` ([`crate::error::Chain`]).
pub fn render_error<E: Located + std::error::Error + ?Sized>(
    file: &str,
    source: &str,
    err: &E,
) -> String {
    let help = err.help();
    // Each link escaped whole: a name from outside in it cannot start a line of its own.
    let message = crate::error::EscapedChain(err).to_string();
    match err.span() {
        Some(span) => render(file, source, span, &message, help.as_deref()),
        None => {
            let mut out = format!("error: {file}: {message}\n");
            if let Some(help) = help {
                let _ = writeln!(out, "  = help: {help}");
            }
            out
        }
    }
}

/// Line `n` (1-based) of `source` without its line ending, with a leading BOM removed.
fn source_line(source: &str, n: usize) -> Option<&str> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    source
        .split('\n')
        .nth(n.checked_sub(1)?)
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[test]
    fn renders_location_snippet_and_caret() {
        let src = "FROM alpine\nFORM x\n";
        let out = render(
            "Dockerfile",
            src,
            Span::on_line(2, 1, 4),
            "unknown instruction \"FORM\"",
            Some("did you mean FROM?"),
        );
        assert_eq!(
            out,
            "error: unknown instruction \"FORM\"\n --> Dockerfile:2:1\n  |\n2 | FORM x\n  | ^^^^\n  = help: did you mean FROM?\n"
        );
    }

    #[test]
    fn caret_follows_tabs_and_column() {
        let out = render("D", "\tRUN x", Span::on_line(1, 6, 1), "m", None);
        assert!(out.ends_with("1 | \tRUN x\n  | \t    ^\n"), "{out}");
    }

    #[test]
    fn caret_past_the_shown_part_of_a_long_line_is_left_out() {
        let line = format!("RUN {}", "x".repeat(1000));
        let far = render("D", &line, Span::on_line(1, 900, 3), "m", None);
        assert!(far.ends_with(&format!("{}\n", "x".repeat(196))), "{far}");
        assert_eq!(far.lines().count(), 4, "{far}");
        // A wide span that starts near the cut stops at the last shown character.
        let near = render("D", &line, Span::on_line(1, 199, 50), "m", None);
        let caret = near.lines().last().unwrap_or_default();
        assert_eq!(caret, format!("  | {}^^", " ".repeat(198)));
    }

    #[test]
    fn errors_without_a_span_print_file_message_and_help() {
        #[derive(Debug)]
        struct NoSpan;
        impl fmt::Display for NoSpan {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("target stage \"x\" could not be found")
            }
        }
        impl std::error::Error for NoSpan {}
        impl Located for NoSpan {
            fn span(&self) -> Option<Span> {
                None
            }
            fn help(&self) -> Option<String> {
                Some("pick one of: a, b".into())
            }
        }
        assert_eq!(
            render_error("Dockerfile", "", &NoSpan),
            "error: Dockerfile: target stage \"x\" could not be found\n  = help: pick one of: a, b\n"
        );
    }

    #[test]
    fn span_past_end_prints_location_only() {
        let out = render("D", "FROM a\n", Span::line(9), "m", Some("h"));
        assert_eq!(out, "error: m\n --> D:9:1\n  = help: h\n");
    }

    #[test]
    fn crlf_and_bom_are_not_shown() {
        let out = render("D", "\u{feff}FROM a\r\nRUN b\r\n", Span::line(1), "m", None);
        assert!(out.contains("1 | FROM a\n"), "{out}");
    }
}
