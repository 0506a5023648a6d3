//! Dockerfile syntax: bytes → [`Dockerfile`], agreeing with BuildKit's parser
//! (`frontend/dockerfile/parser`): parser directives, comments, line continuations, JSON and
//! shell forms, instruction flags, per-instruction argument splitting and heredocs.
//!
//! Where BuildKit is lenient about encoding we are strict: Go strings accept any bytes, but kiln
//! rejects invalid UTF-8 and NUL bytes with the line and column where they occur. A physical line
//! longer than BuildKit's scanner limit (65535 bytes) is an error as in BuildKit.

mod json;
pub(crate) mod words;

use super::ast::{Directive, Directives, Dockerfile, Heredoc, Node, Segment, Warning, position_in};
use crate::frontend::diagnostic::{Located, Position, Span};
use crate::frontend::limits::{CountError, MAX_DOCKERFILE_BYTES, check_counts};
use json::JsonArgs;
use nom::Parser;
use nom::bytes::complete::take_while;
use nom::character::complete::{char, satisfy};
use nom::combinator::recognize;
use words::Marker;

/// BuildKit reads lines with Go's `bufio.Scanner`, whose default token limit is 64 KiB; a line
/// (without its newline) may hold at most this many bytes.
pub const MAX_LINE_BYTES: usize = 65_535;

/// ONBUILD may wrap ONBUILD in BuildKit's parser without limit; kiln stops at this depth so that
/// building, printing and dropping the nested nodes cannot exhaust the stack.
const MAX_ONBUILD_DEPTH: usize = 16;

/// A Dockerfile that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    #[error("the Dockerfile is not valid UTF-8")]
    InvalidUtf8 { span: Span },
    #[error("the Dockerfile contains a NUL byte")]
    NulByte { span: Span },
    #[error("dockerfile line greater than max allowed size of {max} ({len} bytes)")]
    LineTooLong { len: usize, max: usize, span: Span },
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective { name: String, span: Span },
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape { value: String, span: Span },
    #[error("file with no instructions")]
    NoInstructions { span: Span },
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray { keyword: String, span: Span },
    #[error("{keyword} must have two arguments")]
    MissingValue { keyword: String, span: Span },
    #[error("syntax error - can't find = in {word:?}. must be of the form: name=value")]
    MissingEquals {
        keyword: String,
        word: String,
        span: Span,
    },
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc { name: String, span: Span },
    #[error("cannot read the heredoc delimiter in {word:?}: {message}")]
    BadHeredoc {
        word: String,
        message: String,
        span: Span,
    },
    #[error("ONBUILD nested more than {max} levels deep")]
    OnbuildTooDeep { max: usize, span: Span },
    /// More bytes than [`MAX_DOCKERFILE_BYTES`] (a caller that read the file with
    /// [`super::limits::read_dockerfile`] never gets here).
    #[error("the Dockerfile is larger than {max} bytes (16 MiB, BuildKit's limit)")]
    TooLarge { len: usize, max: u64, span: Span },
    /// More stages or instructions than kiln builds.
    #[error(transparent)]
    TooMany(#[from] CountError),
}

impl Located for SyntaxError {
    fn span(&self) -> Option<Span> {
        Some(match self {
            SyntaxError::InvalidUtf8 { span }
            | SyntaxError::NulByte { span }
            | SyntaxError::LineTooLong { span, .. }
            | SyntaxError::DuplicateDirective { span, .. }
            | SyntaxError::InvalidEscape { span, .. }
            | SyntaxError::NoInstructions { span }
            | SyntaxError::NotStringArray { span, .. }
            | SyntaxError::MissingValue { span, .. }
            | SyntaxError::MissingEquals { span, .. }
            | SyntaxError::UnterminatedHeredoc { span, .. }
            | SyntaxError::BadHeredoc { span, .. }
            | SyntaxError::OnbuildTooDeep { span, .. }
            | SyntaxError::TooLarge { span, .. } => *span,
            SyntaxError::TooMany(error) => return error.span(),
        })
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            SyntaxError::InvalidUtf8 { .. } => {
                "save the Dockerfile as UTF-8 (the caret marks the first bad byte)".into()
            }
            SyntaxError::NulByte { .. } => {
                "remove the NUL byte; is this a binary file or UTF-16 text?".into()
            }
            SyntaxError::LineTooLong { .. } => {
                "split the line with a line continuation (`\\` at the end of the line)".into()
            }
            SyntaxError::DuplicateDirective { name, .. } => {
                format!("remove all but one `# {name}=` line")
            }
            SyntaxError::InvalidEscape { .. } => {
                "use `# escape=\\` (the default) or `# escape=``".into()
            }
            SyntaxError::NoInstructions { .. } => {
                "add at least one instruction, e.g. `FROM alpine`".into()
            }
            SyntaxError::NotStringArray { .. } => {
                "quote every element of the JSON array, e.g. [\"echo\", \"1\"]".into()
            }
            SyntaxError::MissingValue { keyword, .. } => {
                format!("give a value: `{keyword} name=value` or `{keyword} name value`")
            }
            SyntaxError::MissingEquals { word, .. } => {
                format!("write `{word}=value`, or quote the value if it contains spaces")
            }
            SyntaxError::UnterminatedHeredoc { name, .. } => {
                format!("end the heredoc with a line containing only `{name}`")
            }
            SyntaxError::BadHeredoc { .. } => {
                "write the delimiter as a plain word, e.g. <<EOF, or quote it whole, e.g. <<'EOF'"
                    .into()
            }
            SyntaxError::OnbuildTooDeep { .. } => "ONBUILD cannot usefully wrap ONBUILD".into(),
            SyntaxError::TooLarge { .. } => {
                "generate a smaller Dockerfile or split the build".into()
            }
            SyntaxError::TooMany(error) => return error.help(),
        })
    }
}

/// One physical line of the file.
struct Line<'a> {
    /// 1-based line number.
    number: usize,
    /// The line with its line ending, as BuildKit's scanner returns it (heredoc bodies use this).
    raw: &'a str,
    /// The line without trailing `\r` and `\n` (BuildKit's `trimNewline`).
    body: &'a str,
}

/// Parses a whole Dockerfile: at most [`MAX_DOCKERFILE_BYTES`], [`super::limits::MAX_STAGES`]
/// stages and [`super::limits::MAX_INSTRUCTIONS`] instructions.
pub fn parse(source: &[u8]) -> Result<Dockerfile, SyntaxError> {
    if source.len() as u64 > MAX_DOCKERFILE_BYTES {
        return Err(SyntaxError::TooLarge {
            len: source.len(),
            max: MAX_DOCKERFILE_BYTES,
            span: Span::line(1),
        });
    }
    let lines = read_lines(source)?;
    let dockerfile = Parser_::new(&lines).run()?;
    check_counts(&dockerfile)?;
    Ok(dockerfile)
}

/// Splits the file into lines after a leading BOM, checking each line's length, NUL bytes and
/// UTF-8 in file order, so the first problem is the one reported.
fn read_lines(source: &[u8]) -> Result<Vec<Line<'_>>, SyntaxError> {
    const BOM: &[u8] = "\u{feff}".as_bytes();
    let (bom_len, text) = match source.strip_prefix(BOM) {
        Some(text) => (BOM.len(), text),
        None => (0, source),
    };
    let mut lines = Vec::new();
    for (index, raw) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        // The scanner limit counts everything before `\n` (a `\r` too, and the BOM on line 1).
        let len =
            raw.strip_suffix(b"\n").unwrap_or(raw).len() + if number == 1 { bom_len } else { 0 };
        if len > MAX_LINE_BYTES {
            return Err(SyntaxError::LineTooLong {
                len,
                max: MAX_LINE_BYTES,
                span: Span::on_line(number, 1, 1),
            });
        }
        let nul = raw.iter().position(|&b| b == 0);
        let raw = match (std::str::from_utf8(raw), nul) {
            (Ok(raw), None) => raw,
            (Ok(_), Some(at)) => return Err(bad_byte(raw, number, at, true)),
            // A NUL is valid UTF-8, so it is never the byte the UTF-8 error points at.
            (Err(e), Some(at)) if at < e.valid_up_to() => {
                return Err(bad_byte(raw, number, at, true));
            }
            (Err(e), _) => return Err(bad_byte(raw, number, e.valid_up_to(), false)),
        };
        lines.push(Line {
            number,
            raw,
            body: raw.trim_end_matches(['\r', '\n']),
        });
    }
    Ok(lines)
}

/// The error for the first bad byte of a line, `at` bytes in (what comes before it is valid).
fn bad_byte(line: &[u8], number: usize, at: usize, is_nul: bool) -> SyntaxError {
    let before = String::from_utf8_lossy(line.get(..at).unwrap_or_default());
    let span = Span::on_line(number, before.chars().count() + 1, 1);
    if is_nul {
        SyntaxError::NulByte { span }
    } else {
        SyntaxError::InvalidUtf8 { span }
    }
}

/// The parse state: BuildKit's `Parse` loop.
struct Parser_<'a> {
    lines: &'a [Line<'a>],
    next: usize,
    directives: Directives,
    /// The directive section is over (a non-directive line was seen).
    directives_done: bool,
    comments: Vec<String>,
    nodes: Vec<Node>,
    warnings: Vec<Warning>,
}

impl<'a> Parser_<'a> {
    fn new(lines: &'a [Line<'a>]) -> Self {
        Self {
            lines,
            next: 0,
            directives: Directives::default(),
            directives_done: false,
            comments: Vec::new(),
            nodes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn run(mut self) -> Result<Dockerfile, SyntaxError> {
        while let Some(line) = self.lines.get(self.next) {
            self.next += 1;
            self.instruction(line)?;
        }
        if self.nodes.is_empty() {
            let last = self.lines.len().max(1);
            return Err(SyntaxError::NoInstructions {
                span: Span::line(last),
            });
        }
        Ok(Dockerfile {
            directives: self.directives,
            nodes: self.nodes,
            warnings: self.warnings,
        })
    }

    /// Handles one line that starts a logical line (and everything that continues it).
    fn instruction(&mut self, line: &'a Line<'a>) -> Result<(), SyntaxError> {
        let trimmed = line.body.trim_start();
        if self.directive(line, trimmed)? {
            return Ok(());
        }
        // BuildKit's `isComment`: the first non-space character is `#`.
        if trimmed.starts_with('#') {
            // BuildKit drops the first byte of the untrimmed line, then trims.
            let mut chars = line.raw.chars();
            chars.next();
            let comment = chars.as_str().trim();
            if comment.is_empty() {
                self.comments.clear();
            } else {
                self.comments.push(comment.to_string());
            }
            return Ok(());
        }
        let (text, mut end_of_line) = self.trim_continuation(trimmed);
        if end_of_line && text.is_empty() {
            return Ok(());
        }
        let column = line.body[..line.body.len() - trimmed.len()].chars().count() + 1;
        let mut original = String::from(text);
        let first = Position::new(line.number, column);
        let mut segments = vec![Segment {
            offset: 0,
            start: first,
        }];
        let mut last_line = line;
        let mut empty_continuation = false;
        while !end_of_line {
            let Some(next) = self.lines.get(self.next) else {
                break;
            };
            self.next += 1;
            last_line = next;
            let content = next.body.trim_start();
            if content.starts_with('#') {
                continue;
            }
            if content.is_empty() {
                empty_continuation = true;
                continue;
            }
            let (text, eol) = self.trim_continuation(next.body);
            end_of_line = eol;
            segments.push(Segment {
                offset: original.len(),
                start: Position::new(next.number, 1),
            });
            original.push_str(text);
        }
        // The keyword starts at the first non-space character of the logical line.
        let lead = original.len() - original.trim_start().len();
        let start = position_in(&segments, &original, lead).unwrap_or(first);
        let span = Span::new(start, line_end(last_line));
        if empty_continuation {
            self.warnings.push(Warning {
                message: format!("empty continuation line found in: {original}"),
                span: Span::line(last_line.number),
            });
        }
        let mut node = build_node(&original, self.directives.escape, span, 0)?;
        node.segments = segments;
        node.comments = std::mem::take(&mut self.comments);
        if can_contain_heredoc(&node) && node.original.contains("<<") {
            self.heredocs(&mut node, last_line)?;
        }
        self.nodes.push(node);
        Ok(())
    }

    /// Reads the bodies of the heredocs that `node`'s line opens, in order, from the lines after
    /// it (`last_line` is the last line read so far), and extends the node's span over them.
    fn heredocs(
        &mut self,
        node: &mut Node,
        mut last_line: &'a Line<'a>,
    ) -> Result<(), SyntaxError> {
        let markers =
            words::heredoc_markers(&node.original).map_err(|bad| SyntaxError::BadHeredoc {
                // The lexer may have rewritten the word; then point at `<<`.
                span: node
                    .find_span_opt(&bad.word)
                    .unwrap_or_else(|| node.find_span("<<")),
                word: bad.word,
                message: bad.message,
            })?;
        for marker in markers {
            let content = self.heredoc_body(&marker, &mut last_line);
            node.span.end = line_end(last_line);
            let Some(content) = content else {
                // Point at the marker when it is written plainly, else at `<<`.
                let span = node
                    .find_span_opt(&format!("<<{}", marker.name))
                    .unwrap_or_else(|| node.find_span("<<"));
                return Err(SyntaxError::UnterminatedHeredoc {
                    name: marker.name,
                    span,
                });
            };
            node.heredocs.push(Heredoc {
                name: marker.name,
                content,
                expand: marker.expand,
                chomp: marker.chomp,
            });
        }
        Ok(())
    }

    /// The lines up to `marker`'s terminator line, or `None` when the file ends first;
    /// `last_line` follows the lines read.
    fn heredoc_body(&mut self, marker: &Marker, last_line: &mut &'a Line<'a>) -> Option<String> {
        // `<<-` strips leading tabs from the body and from the terminator line.
        let strip: fn(&str) -> &str = if marker.chomp {
            |line| line.trim_start_matches('\t')
        } else {
            |line| line
        };
        let mut content = String::new();
        while let Some(line) = self.lines.get(self.next) {
            self.next += 1;
            *last_line = line;
            if strip(line.body) == marker.name {
                return Some(content);
            }
            content.push_str(strip(line.raw));
        }
        None
    }

    /// BuildKit's directive parser: returns whether `trimmed` was a parser directive.
    fn directive(&mut self, line: &Line<'_>, trimmed: &str) -> Result<bool, SyntaxError> {
        if self.directives_done {
            return Ok(false);
        }
        let Some((name, value)) = parse_directive(trimmed) else {
            self.directives_done = true;
            return Ok(false);
        };
        let name = name.to_ascii_lowercase();
        // `escape` also sets the escape character, `None` when the value is not one.
        let (slot, escape) = match name.as_str() {
            "syntax" => (&mut self.directives.syntax, None),
            "escape" => (
                &mut self.directives.escape_directive,
                Some(match value {
                    "\\" => Some('\\'),
                    "`" => Some('`'),
                    _ => None,
                }),
            ),
            "check" => (&mut self.directives.check, None),
            _ => {
                self.directives_done = true;
                return Ok(false);
            }
        };
        let name_col = line.body.len() - trimmed.len();
        let span = Span::on_line(
            line.number,
            line.body[..name_col].chars().count() + 1,
            trimmed.chars().count().max(1),
        );
        if slot.is_some() {
            return Err(SyntaxError::DuplicateDirective { name, span });
        }
        *slot = Some(Directive {
            name,
            value: value.to_string(),
            line: line.number,
        });
        if let Some(escape) = escape {
            self.directives.escape = escape.ok_or_else(|| SyntaxError::InvalidEscape {
                value: value.to_string(),
                span,
            })?;
        }
        Ok(true)
    }

    /// BuildKit's line continuation rule: the escape character, then only spaces and tabs, at
    /// the end of the line, and not itself preceded by the escape character. Returns the line
    /// without it and whether the logical line ends here.
    fn trim_continuation<'s>(&self, line: &'s str) -> (&'s str, bool) {
        let escape = self.directives.escape;
        let without_blanks = line.trim_end_matches([' ', '\t']);
        let Some(before) = without_blanks.strip_suffix(escape) else {
            return (line, true);
        };
        if before.ends_with(escape) {
            return (line, true);
        }
        (before, false)
    }
}

/// `# name = value` (Go: `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`, `\s` being ASCII
/// whitespace without `\v`).
pub(crate) fn parse_directive(line: &str) -> Option<(&str, &str)> {
    let re_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r');
    let parsed: nom::IResult<&str, (char, &str, &str, &str, char, &str)> = (
        char('#'),
        take_while(re_space),
        recognize((
            satisfy(|c| c.is_ascii_alphabetic()),
            take_while(|c: char| c.is_ascii_alphanumeric()),
        )),
        take_while(re_space),
        char('='),
        take_while(re_space),
    )
        .parse(line);
    let (value, (_, _, name, _, _, spaces)) = parsed.ok()?;
    let value = value.trim_end_matches(re_space);
    if value.is_empty() {
        // `(.+?)` needs one character: the regex backtracks into the spaces after `=` and takes
        // the last one.
        let last = spaces.chars().last()?;
        return Some((name, &spaces[spaces.len() - last.len_utf8()..]));
    }
    Some((name, value))
}

/// The whole of `line`: its end is just past its last character.
fn line_end(line: &Line<'_>) -> Position {
    Position::new(line.number, line.body.chars().count() + 1)
}

fn can_contain_heredoc(node: &Node) -> bool {
    let node = node.onbuild.as_deref().unwrap_or(node);
    keyword_is(&node.keyword, &["run", "copy", "add"]) && !node.json
}

/// Keywords are case-insensitive: whether `keyword` is one of the lower-case `names`.
fn keyword_is(keyword: &str, names: &[&str]) -> bool {
    names.iter().any(|name| keyword.eq_ignore_ascii_case(name))
}

/// BuildKit's `newNodeFromLine`: keyword, flags and the arguments split for that keyword.
/// `span` is where errors point.
fn build_node(line: &str, escape: char, span: Span, depth: usize) -> Result<Node, SyntaxError> {
    let (keyword, rest) = words::split_first_whitespace(line.trim());
    let (flags, rest) = match rest {
        Some(rest) => words::extract_flags(rest, escape),
        None => (Vec::new(), "".into()),
    };
    let rest = rest.trim();
    let mut node = Node {
        keyword: keyword.to_string(),
        flags,
        args: Vec::new(),
        json: false,
        onbuild: None,
        heredocs: Vec::new(),
        original: line.to_string(),
        span,
        segments: Vec::new(),
        comments: Vec::new(),
    };
    let is = |names: &[&str]| keyword_is(keyword, names);
    if is(&["run", "cmd", "entrypoint", "shell"]) {
        maybe_json(&mut node, rest, span)?;
    } else if is(&["add", "copy", "volume"]) {
        match json::parse_json_array(rest) {
            JsonArgs::Strings(args) => {
                node.args = args;
                node.json = true;
            }
            JsonArgs::NotStringArray => return Err(not_string_array(&node, span)),
            JsonArgs::NotJson => node.args = words::split_whitespace(rest),
        }
    } else if is(&["from", "expose"]) {
        node.args = words::split_whitespace(rest);
    } else if is(&["maintainer", "stopsignal", "user", "workdir"]) {
        if !rest.is_empty() {
            node.args = vec![rest.to_string()];
        }
    } else if is(&["arg"]) {
        node.args = words::parse_words(rest, escape);
    } else if is(&["env"]) {
        node.args = name_values(rest, "ENV", escape, span)?;
    } else if is(&["label"]) {
        node.args = name_values(rest, "LABEL", escape, span)?;
    } else if is(&["healthcheck"]) {
        healthcheck(&mut node, rest, span)?;
    } else if is(&["onbuild"]) {
        if !rest.is_empty() {
            if depth >= MAX_ONBUILD_DEPTH {
                return Err(SyntaxError::OnbuildTooDeep {
                    max: MAX_ONBUILD_DEPTH,
                    span,
                });
            }
            node.onbuild = Some(Box::new(build_node(rest, escape, span, depth + 1)?));
        }
    } else {
        // BuildKit keeps unknown instructions with one empty argument (its `parseIgnore`).
        node.args = vec![String::new()];
    }
    Ok(node)
}

fn not_string_array(node: &Node, span: Span) -> SyntaxError {
    SyntaxError::NotStringArray {
        keyword: node.keyword.clone(),
        span,
    }
}

/// BuildKit's `parseMaybeJSON`: a JSON array of strings, or the whole rest as one argument.
fn maybe_json(node: &mut Node, rest: &str, span: Span) -> Result<(), SyntaxError> {
    if rest.is_empty() {
        return Ok(());
    }
    match json::parse_json_array(rest) {
        JsonArgs::Strings(args) => {
            node.args.extend(args);
            node.json = true;
        }
        JsonArgs::NotStringArray => return Err(not_string_array(node, span)),
        JsonArgs::NotJson => node.args.push(rest.to_string()),
    }
    Ok(())
}

/// BuildKit's `parseNameVal` (ENV, LABEL): `name value` (one pair, the rest of the line is the
/// value) or `name=value ...`; each pair becomes `name, value, sep`. `keyword` (`ENV` or `LABEL`)
/// names the instruction in errors.
fn name_values(
    rest: &str,
    keyword: &str,
    escape: char,
    span: Span,
) -> Result<Vec<String>, SyntaxError> {
    let words = words::parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Vec::new());
    };
    if !first.contains('=') {
        let (name, value) = words::split_first_whitespace(rest);
        let Some(value) = value else {
            return Err(SyntaxError::MissingValue {
                keyword: keyword.to_string(),
                span,
            });
        };
        return Ok(vec![name.to_string(), value.to_string(), String::new()]);
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(SyntaxError::MissingEquals {
                keyword: keyword.to_string(),
                word,
                span,
            });
        };
        args.extend([name.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(args)
}

/// BuildKit's `parseHealthConfig`: the type word (`CMD`, `NONE`, ...) then the command as for CMD.
/// It scans bytes, so the separators are Go's byte-wise spaces.
fn healthcheck(node: &mut Node, rest: &str, span: Span) -> Result<(), SyntaxError> {
    let bytes = rest.as_bytes();
    let sep = bytes
        .iter()
        .position(|&b| words::is_go_space_byte(b))
        .unwrap_or(bytes.len());
    if sep == 0 {
        return Ok(());
    }
    let next = bytes[sep..]
        .iter()
        .position(|&b| !words::is_go_space_byte(b))
        .map_or(bytes.len(), |p| sep + p);
    node.args.push(words::byte_slice(rest, 0, sep).into_owned());
    let command = words::byte_slice(rest, next, bytes.len());
    maybe_json(node, &command, span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_lines() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("# escape=`", Some(("escape", "`"))),
            (
                "#syntax = docker/dockerfile:1  ",
                Some(("syntax", "docker/dockerfile:1")),
            ),
            ("# EScape = \\", Some(("EScape", "\\"))),
            ("# escape=   ", Some(("escape", " "))),
            ("# escape=", None),
            ("# syntax-x=a", None),
            ("# 1x=a", None),
            ("FROM a", None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_directive(line), *want, "{line}");
        }
    }

    #[test]
    fn line_checks_count_the_bom_toward_the_length_but_not_the_column() {
        let long = |n: usize| format!("\u{feff}{}", "a".repeat(n)).into_bytes();
        let too_long = |len| SyntaxError::LineTooLong {
            len,
            max: MAX_LINE_BYTES,
            span: Span::on_line(1, 1, 1),
        };
        let nul = |line, column| SyntaxError::NulByte {
            span: Span::on_line(line, column, 1),
        };
        let utf8 = |line, column| SyntaxError::InvalidUtf8 {
            span: Span::on_line(line, column, 1),
        };
        let cases: Vec<(Vec<u8>, Option<SyntaxError>)> = vec![
            (long(MAX_LINE_BYTES - 3), None),
            (long(MAX_LINE_BYTES - 2), Some(too_long(MAX_LINE_BYTES + 1))),
            (b"\xef\xbb\xbfab\0".to_vec(), Some(nul(1, 3))),
            ("é\u{0}\u{ff}".as_bytes().to_vec(), Some(nul(1, 2))),
            (b"a\xff\0".to_vec(), Some(utf8(1, 2))),
            (b"a\r\nb\xe2\x82".to_vec(), Some(utf8(2, 2))),
        ];
        for (source, want) in cases {
            assert_eq!(read_lines(&source).err(), want, "{:?}", source.get(..12));
        }
    }

    /// The file's dump (BuildKit's `Node.Dump()`), one line per instruction.
    fn dump(source: &str) -> Vec<String> {
        let df = parse(source.as_bytes()).expect("parses");
        df.nodes.iter().map(Node::dump).collect()
    }

    /// `(name, content, chomp)` of each node's heredocs.
    fn heredocs(source: &str) -> Vec<Vec<(String, String, bool)>> {
        let df = parse(source.as_bytes()).expect("parses");
        df.nodes
            .iter()
            .map(|n| {
                n.heredocs
                    .iter()
                    .map(|h| (h.name.clone(), h.content.clone(), h.chomp))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn blanks_after_heredoc_marker_are_allowed() {
        let src = "FROM a\nRUN <<  EOF  > foo\nx\nEOF\nRUN cat <<\t'Q'\n$y\nQ\nCOPY << A /d\nA\n";
        let h = |name: &str, content: &str| vec![(name.to_string(), content.to_string(), false)];
        assert_eq!(
            heredocs(src),
            [vec![], h("EOF", "x\n"), h("Q", "$y\n"), h("A", "")]
        );
        assert_eq!(
            dump(src)[1..],
            [
                r#"run "<<  EOF  > foo""#,
                r#"run "cat <<\t'Q'""#,
                r#"copy "<<" "A" "/d""#
            ]
        );
        // `<<-` then a blank: the lexer splits there, and `<<-` alone is no marker (BuildKit
        // v0.32's regexp takes the `-` greedily), so the next line is an instruction.
        let src = "FROM a\nRUN <<- EOF\nEOF\n";
        assert_eq!(heredocs(src), [vec![], vec![], vec![]]);
        assert_eq!(dump(src), ["from \"a\"", "run \"<<- EOF\"", "eof \"\""]);
        // `<< -EOF` names `-EOF`, not a chomped `EOF`.
        let src = "FROM a\nRUN << -EOF\n\tx\n-EOF\n";
        assert_eq!(heredocs(src)[1], h("-EOF", "\tx\n"));
    }

    #[test]
    fn flags_keep_backslashes_under_backtick_escape() {
        let flags = |source: &str| {
            parse(source.as_bytes()).expect("parses").nodes[1]
                .flags
                .clone()
        };
        let run = r"RUN --mount=type=cache,target=C:\cache --network=none echo";
        assert_eq!(
            flags(&format!("# escape=`\nFROM a\n{run}\n")),
            [r"--mount=type=cache,target=C:\cache", "--network=none"]
        );
        // The default escape takes the backslash as an escape, as BuildKit does.
        assert_eq!(
            flags(&format!("FROM a\n{run}\n")),
            ["--mount=type=cache,target=C:cache", "--network=none"]
        );
        assert_eq!(
            flags("# escape=`\nFROM a\nCOPY --from=a`b --chown=\"x y\" s d\n"),
            ["--from=ab", "--chown=x y"]
        );
    }

    #[test]
    fn json_array_with_more_after_it_is_the_shell_form() {
        let src = concat!(
            "FROM a\n",
            "CMD [\"a\"] # comment\n",
            "ENTRYPOINT []x\n",
            "RUN [\"echo\"] x\n",
            "SHELL [\"sh\"] -c\n",
            "COPY [\"a\", \"b\"] c\n",
            "ADD [\"a\"] [\"b\"]\n",
            "VOLUME [\"/v\"] /w\n",
            "HEALTHCHECK CMD [\"true\"] x\n",
            "RUN [1] x\n",
            "ONBUILD CMD [\"a\"]x\n",
            // Trailing blanks are trimmed with the line: still JSON.
            "CMD [\"a\"]  \t\n",
        );
        assert_eq!(
            dump(src)[1..],
            [
                r#"cmd "[\"a\"] # comment""#,
                r#"entrypoint "[]x""#,
                r#"run "[\"echo\"] x""#,
                r#"shell "[\"sh\"] -c""#,
                r#"copy "[\"a\"," "\"b\"]" "c""#,
                r#"add "[\"a\"]" "[\"b\"]""#,
                r#"volume "[\"/v\"]" "/w""#,
                r#"healthcheck "CMD" "[\"true\"] x""#,
                r#"run "[1] x""#,
                r#"onbuild (cmd "[\"a\"]x")"#,
                r#"cmd "a""#,
            ]
        );
        let df = parse(src.as_bytes()).expect("parses");
        let json: Vec<bool> = df.nodes.iter().map(|n| n.json).collect();
        assert_eq!(json.iter().filter(|&&j| j).count(), 1, "{json:?}");
        assert!(df.nodes.last().is_some_and(|n| n.json));
        // Not trailing text but a non-string element: still BuildKit's hard error.
        assert!(matches!(
            parse(b"FROM a\nCMD [1]\n"),
            Err(SyntaxError::NotStringArray { .. })
        ));
    }

    #[test]
    fn unreadable_heredoc_delimiter_fails_the_parse_at_the_marker() {
        let err = parse(b"FROM a\nRUN cat <<${X:-\\\"}\nbody\n").err();
        assert_eq!(
            err,
            Some(SyntaxError::BadHeredoc {
                word: "<<${X:-\"}".into(),
                message: "missing closing double quote (\") for the quote opened here".into(),
                span: Span::new(Position::new(2, 9), Position::new(2, 11)),
            })
        );
    }
}
