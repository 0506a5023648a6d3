//! BuildKit's `LintResults` document (`frontend/subrequests/lint/lint.go`) as buildx prints it
//! for `--call check,format=json`: Go's `json.MarshalIndent(results, "", "  ")` of the Go
//! structs, so field order, `omitempty` (a zero line or character, a zero source index are left
//! out) and Go's escaping of `<`, `>` and `&` are BuildKit's.
//!
//! One difference: a source's `definition` (the LLB that loaded the Dockerfile, which holds
//! BuildKit's session IDs) is left out; kiln has no LLB.

use super::{Finding, Report};
use base64::Engine as _;
use serde::Serialize;

#[derive(Serialize)]
struct LintResults<'a> {
    warnings: Option<Vec<Warning<'a>>>,
    sources: Vec<SourceInfo>,
    #[serde(rename = "buildError", skip_serializing_if = "Option::is_none")]
    build_error: Option<BuildError>,
}

#[derive(Serialize)]
struct Warning<'a> {
    #[serde(rename = "ruleName")]
    rule_name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    url: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    detail: &'a str,
    location: Location,
}

#[derive(Serialize)]
struct Location {
    #[serde(rename = "sourceIndex", skip_serializing_if = "is_zero")]
    source_index: i32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ranges: Vec<Range>,
}

#[derive(Serialize)]
struct Range {
    start: Position,
    end: Position,
}

#[derive(Serialize)]
struct Position {
    #[serde(skip_serializing_if = "is_zero")]
    line: i32,
    #[serde(skip_serializing_if = "is_zero")]
    character: i32,
}

#[derive(Serialize)]
struct SourceInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    filename: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    data: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    language: String,
}

#[derive(Serialize)]
struct BuildError {
    message: String,
    location: Location,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A build error that ended the checks (BuildKit's `buildError`): its message and the lines
/// it is about, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub message: String,
    pub lines: Option<(usize, usize)>,
}

fn line(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn location(lines: Option<(usize, usize)>) -> Location {
    Location {
        source_index: 0,
        ranges: lines
            .map(|(start, end)| Range {
                start: Position {
                    line: line(start),
                    character: 0,
                },
                end: Position {
                    line: line(end),
                    character: 0,
                },
            })
            .into_iter()
            .collect(),
    }
}

fn warning(finding: &Finding) -> Warning<'_> {
    Warning {
        rule_name: finding.rule.name,
        description: finding.rule.description,
        url: finding.rule.url,
        detail: &finding.message,
        location: location(Some((finding.span.start.line, finding.span.end.line))),
    }
}

/// The document for `report` of the Dockerfile `filename` whose bytes are `source`, with the
/// error that stopped the checks, if any; a trailing newline as buildx prints it.
pub fn render(
    report: &Report,
    filename: &str,
    source: &[u8],
    error: Option<&CheckError>,
) -> String {
    let warnings: Vec<Warning<'_>> = report.findings.iter().map(warning).collect();
    let results = LintResults {
        // Go marshals a nil slice as `null`: BuildKit appends to a nil slice.
        warnings: (!warnings.is_empty()).then_some(warnings),
        sources: vec![SourceInfo {
            filename: filename.to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(source),
            language: "Dockerfile".to_string(),
        }],
        build_error: error.map(|e| BuildError {
            message: e.message.clone(),
            location: location(e.lines),
        }),
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing plain structs of strings and numbers cannot fail.
    let _ = results.serialize(&mut serializer);
    let mut text = go_escape(&String::from_utf8_lossy(&out));
    text.push('\n');
    text
}

/// Go's `encoding/json` HTML-safe escaping, which serde_json does not do: `<`, `>`, `&`, U+2028
/// and U+2029 as `\u` escapes. They occur only inside strings in a JSON document, so replacing
/// them everywhere is exact. DEL and the C1 control characters, which both leave raw, are
/// escaped too: the document goes to a terminal, and the escape is the same string to a JSON
/// reader.
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\u{7f}'..='\u{9f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}
