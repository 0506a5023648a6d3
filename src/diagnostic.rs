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
    let mut out = String::new();
    let _ = writeln!(out, "error: {message}");
    let line_no = span.start.line;
    let _ = writeln!(out, " --> {file}:{}:{}", line_no, span.start.column);
    if let Some(text) = source_line(source, line_no) {
        let gutter = line_no.to_string().len();
        let pad = " ".repeat(gutter);
        // Long lines (the parser refuses lines over 64 KiB) are cut so the snippet stays readable.
        let shown: String = text.chars().take(200).collect();
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{line_no} | {shown}");
        let col = span.start.column.max(1);
        // Indent the caret with the line's own whitespace characters so tabs line up.
        let indent: String = text
            .chars()
            .take(col - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let width = if span.end.line == span.start.line && span.end.column > span.start.column {
            span.end.column - span.start.column
        } else {
            1
        };
        let _ = writeln!(out, "{pad} | {indent}{}", "^".repeat(width.min(200)));
        if let Some(help) = help {
            let _ = writeln!(out, "{pad} = help: {help}");
        }
    } else if let Some(help) = help {
        let _ = writeln!(out, "  = help: {help}");
    }
    out
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
