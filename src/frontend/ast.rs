//! The raw syntax tree: a Dockerfile as BuildKit's parser sees it, before any meaning is given to
//! the words.
//!
//! Each [`Node`] is one instruction (a logical line, continuations joined) with its arguments split
//! the way BuildKit's parser splits them (its `Node.Next` chain), so that [`Node::dump`] can print
//! exactly BuildKit's `Node.Dump()`. Words are not expanded here; [`super::instruction`] gives them
//! types and [`super::stage`] expands them.

use crate::frontend::diagnostic::{Position, Span};
use serde::Serialize;

/// A whole parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dockerfile {
    pub directives: Directives,
    /// Instructions in source order.
    pub nodes: Vec<Node>,
    /// Things that parse but are probably mistakes (BuildKit prints these as warnings), e.g. an
    /// empty continuation line.
    pub warnings: Vec<Warning>,
}

/// Parser directives from the top of the file (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directives {
    /// The escape character: `\` unless `# escape=` set a backtick.
    pub escape: char,
    pub syntax: Option<Directive>,
    pub escape_directive: Option<Directive>,
    pub check: Option<Directive>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            escape: '\\',
            syntax: None,
            escape_directive: None,
            check: None,
        }
    }
}

/// One parser directive as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Directive {
    /// Lower-cased name: `syntax`, `escape` or `check`.
    pub name: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub message: String,
    pub span: Span,
}

/// One instruction: BuildKit's `Node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The instruction keyword as written (`RUN`, `run`, ...). Unknown keywords are kept; the
    /// typed layer rejects them.
    pub keyword: String,
    /// Flags before the arguments, as written (`--from=builder`, `--mount=type=cache,target=/x`).
    pub flags: Vec<String>,
    /// The arguments, split as BuildKit splits them for this keyword (its `Next` chain):
    /// - JSON form (`RUN ["a","b"]`): one entry per array element, and `json` is true;
    /// - shell form of RUN/CMD/ENTRYPOINT/SHELL: one entry, the rest of the line;
    /// - ENV/LABEL: triples `name, value, sep` where `sep` is `"="` for `k=v` and `""` for the
    ///   legacy `ENV k v` form (values keep their quotes);
    /// - ARG: `name` or `name=value` words;
    /// - FROM/EXPOSE/COPY/ADD/VOLUME (shell form): whitespace-separated words;
    /// - MAINTAINER/USER/WORKDIR/STOPSIGNAL: one entry;
    /// - HEALTHCHECK: `NONE`, or `CMD` followed by the command's arguments as for CMD;
    /// - ONBUILD: empty, the inner instruction is in `onbuild`.
    /// - unknown keywords: one empty string (BuildKit's `parseIgnore`; the words are in
    ///   `original`).
    pub args: Vec<String>,
    /// The arguments came from a JSON array.
    pub json: bool,
    /// ONBUILD's inner instruction.
    pub onbuild: Option<Box<Node>>,
    /// Heredoc bodies that follow this instruction, in the order their `<<NAME` markers appear.
    pub heredocs: Vec<Heredoc>,
    /// The logical line after continuations were joined (BuildKit's `Node.Original`).
    pub original: String,
    /// From the first character of the keyword to the end of the last line the instruction uses
    /// (heredoc bodies included).
    pub span: Span,
    /// Where pieces of `original` came from: `original[seg.offset..next.offset]` starts at
    /// `seg.start` in the file. Used by [`Node::position_of`] to point errors at a flag or word.
    pub segments: Vec<Segment>,
    /// Comment lines directly above the instruction (without the `#`).
    pub comments: Vec<String>,
}

/// A run of `Node::original` that came from one physical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Byte offset into `Node::original`.
    pub offset: usize,
    /// Where that byte is in the file.
    pub start: Position,
}

/// The position in the file of byte `offset` of `original`, which `segments` map to the file
/// (as [`Node::segments`] map [`Node::original`]). `None` when no segment starts at or before
/// `offset`, or `offset` is not on a character boundary of `original`; an offset past the end
/// is the end.
pub fn position_in(segments: &[Segment], original: &str, offset: usize) -> Option<Position> {
    let seg = segments.iter().rev().find(|s| s.offset <= offset)?;
    let piece = original.get(seg.offset..offset.min(original.len()))?;
    Some(Position::new(
        seg.start.line,
        seg.start.column + piece.chars().count(),
    ))
}

/// A heredoc body (`<<EOF`, `<<-EOF`, `<<"EOF"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word without quotes or `-`.
    pub name: String,
    /// The body, every line with its newline, the terminator line excluded. With `chomp` (`<<-`)
    /// leading tabs are already removed from every line.
    pub content: String,
    /// False when the delimiter was quoted: the body is taken literally, no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs stripped.
    pub chomp: bool,
}

impl Node {
    /// The position in the file of byte `offset` of `original`, or the node's start when the
    /// node has no segments.
    pub fn position_of(&self, offset: usize) -> Position {
        position_in(&self.segments, &self.original, offset).unwrap_or(self.span.start)
    }

    /// A one-line span for `len` bytes of `original` starting at byte `offset`.
    pub fn span_of(&self, offset: usize, len: usize) -> Span {
        let start = self.position_of(offset);
        let end_off = (offset + len).min(self.original.len());
        let chars = self
            .original
            .get(offset..end_off)
            .map_or(0, |s| s.chars().count());
        Span::new(start, Position::new(start.line, start.column + chars))
    }

    /// The span of the first occurrence of `needle` in `original` (e.g. a flag), or the keyword's
    /// position when it is not there.
    pub fn find_span(&self, needle: &str) -> Span {
        self.find_span_opt(needle)
            .unwrap_or(Span::new(self.span.start, self.span.start))
    }

    /// The span of the first occurrence of `needle` in `original`, if it is there.
    pub fn find_span_opt(&self, needle: &str) -> Option<Span> {
        let offset = self.original.find(needle)?;
        Some(self.span_of(offset, needle.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_segments_and_never_panic() {
        // "RUN é" from line 3 column 2, then "x" from line 4 column 1.
        let segments = [
            Segment {
                offset: 0,
                start: Position::new(3, 2),
            },
            Segment {
                offset: 6,
                start: Position::new(4, 1),
            },
        ];
        let original = "RUN éx";
        let cases: &[(usize, Option<Position>)] = &[
            (0, Some(Position::new(3, 2))),
            (4, Some(Position::new(3, 6))),
            // Inside the two bytes of `é`.
            (5, None),
            (6, Some(Position::new(4, 1))),
            (7, Some(Position::new(4, 2))),
            (100, Some(Position::new(4, 2))),
        ];
        for &(offset, want) in cases {
            assert_eq!(position_in(&segments, original, offset), want, "{offset}");
        }
        assert_eq!(position_in(&[], original, 0), None);
    }
}
