//! `--format` for the image commands: the part of Go's `text/template` that docker users write
//! (`{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{join .RepoTags ", "}}`, `{{if}}`/`{{else}}`,
//! `{{range}}`, `{{-`/`-}}` trimming) over JSON values, docker's `table` prefix with its header
//! row, and the column alignment of docker's tabwriter.

use serde_json::Value;
use std::fmt::Write as _;

/// A `--format` template that cannot be parsed or run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template: unclosed action (a '{{{{' without '}}}}') in {0:?}")]
    Unclosed(String),
    #[error(
        "template: unsupported action {{{{{0}}}}}: kiln supports {{{{.Field}}}}, {{{{if}}}}, \
         {{{{else}}}}, {{{{range}}}}, {{{{end}}}} and the functions json, join, upper, lower, \
         title, truncate and println"
    )]
    Unsupported(String),
    #[error("template: unexpected {{{{{0}}}}}")]
    Unexpected(String),
    #[error("template: missing {{{{end}}}} for {{{{{0}}}}}")]
    MissingEnd(String),
    #[error("template: unknown field .{field}; the fields are {known}")]
    UnknownField { field: String, known: String },
    #[error("template: can't evaluate field {field} in {value}")]
    NotAnObject { field: String, value: String },
    #[error("template: {0}")]
    Call(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Print(Expr),
    If {
        cond: Expr,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        over: Expr,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// `.A.B` (empty for `.`).
    Path(Vec<String>),
    Call(Func, Vec<Operand>),
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<String>),
    Str(String),
    Int(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Json,
    Join,
    Upper,
    Lower,
    Title,
    Truncate,
    Println,
}

/// A block being parsed: what opened it, and the nodes of its branches so far.
struct Frame {
    opener: String,
    kind: FrameKind,
    first: Vec<Node>,
    second: Option<Vec<Node>>,
}

enum FrameKind {
    If(Expr),
    Range(Expr),
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut frames: Vec<Frame> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut rest = text;
        let mut trim_next_text = false;
        while !rest.is_empty() {
            let (literal, action) = match rest.find("{{") {
                Some(at) => (&rest[..at], Some(&rest[at + 2..])),
                None => (rest, None),
            };
            let mut literal = literal.to_string();
            if trim_next_text {
                literal = literal.trim_start().to_string();
            }
            let Some(after_open) = action else {
                push(&mut frames, &mut nodes, Node::Text(literal));
                break;
            };
            let Some(close) = after_open.find("}}") else {
                return Err(TemplateError::Unclosed(ellipsis(text)));
            };
            let mut inner = &after_open[..close];
            rest = &after_open[close + 2..];
            if let Some(trimmed) = inner.strip_prefix("- ") {
                literal = literal.trim_end().to_string();
                inner = trimmed;
            }
            trim_next_text = false;
            if let Some(trimmed) = inner.strip_suffix(" -") {
                trim_next_text = true;
                inner = trimmed;
            }
            if !literal.is_empty() {
                push(&mut frames, &mut nodes, Node::Text(literal));
            }
            let inner = inner.trim();
            let words = tokenize(inner)?;
            match words.first().map(String::as_str) {
                Some("if") | Some("range") => {
                    let expr = expression(inner, &words[1..])?;
                    let kind = if words[0] == "if" {
                        FrameKind::If(expr)
                    } else {
                        FrameKind::Range(expr)
                    };
                    frames.push(Frame {
                        opener: inner.to_string(),
                        kind,
                        first: Vec::new(),
                        second: None,
                    });
                }
                Some("else") if words.len() == 1 => match frames.last_mut() {
                    Some(frame) if frame.second.is_none() => frame.second = Some(Vec::new()),
                    _ => return Err(TemplateError::Unexpected(inner.to_string())),
                },
                Some("end") if words.len() == 1 => {
                    let frame = frames
                        .pop()
                        .ok_or_else(|| TemplateError::Unexpected(inner.to_string()))?;
                    let otherwise = frame.second.unwrap_or_default();
                    let node = match frame.kind {
                        FrameKind::If(cond) => Node::If {
                            cond,
                            then: frame.first,
                            otherwise,
                        },
                        FrameKind::Range(over) => Node::Range {
                            over,
                            body: frame.first,
                            otherwise,
                        },
                    };
                    push(&mut frames, &mut nodes, node);
                }
                _ => {
                    let expr = expression(inner, &words)?;
                    push(&mut frames, &mut nodes, Node::Print(expr));
                }
            }
        }
        if let Some(frame) = frames.pop() {
            return Err(TemplateError::MissingEnd(frame.opener));
        }
        Ok(Template { nodes })
    }

    /// Checks that every field the template reads from its top-level value is one of `known`
    /// (so a typo is an error before anything prints, as docker's typed contexts make it).
    pub fn check_fields(&self, known: &[&str]) -> Result<(), TemplateError> {
        let mut first = Vec::new();
        top_level_fields(&self.nodes, &mut first);
        match first.into_iter().find(|f| !known.contains(&f.as_str())) {
            Some(field) => Err(TemplateError::UnknownField {
                field,
                known: known
                    .iter()
                    .map(|k| format!(".{k}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            None => Ok(()),
        }
    }

    /// Runs the template with `dot` as `.`.
    pub fn render(&self, dot: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        render_nodes(&self.nodes, dot, &mut out)?;
        Ok(out)
    }
}

fn ellipsis(text: &str) -> String {
    text.chars().take(80).collect()
}

fn push(frames: &mut [Frame], nodes: &mut Vec<Node>, node: Node) {
    match frames.last_mut() {
        Some(frame) => match &mut frame.second {
            Some(second) => second.push(node),
            None => frame.first.push(node),
        },
        None => nodes.push(node),
    }
}

/// Splits an action into words: bare words, and `"..."` / `` `...` `` strings (kept with their
/// quotes so [`operand`] can tell them apart). Pipelines, variables and parentheses are refused.
fn tokenize(inner: &str) -> Result<Vec<String>, TemplateError> {
    let unsupported = || TemplateError::Unsupported(inner.to_string());
    let mut words = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '`' {
            chars.next();
            let mut word = String::from('"');
            loop {
                match chars.next() {
                    Some(end) if end == c => break,
                    Some('\\') if c == '"' => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some('t') => word.push('\t'),
                        Some(other) => word.push(other),
                        None => return Err(unsupported()),
                    },
                    Some(other) => word.push(other),
                    None => return Err(unsupported()),
                }
            }
            words.push(word);
        } else if matches!(c, '|' | '$' | '(' | ')') {
            return Err(unsupported());
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' || c == '`' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    Ok(words)
}

/// `.Path` alone, or `func arg...`.
fn expression(inner: &str, words: &[String]) -> Result<Expr, TemplateError> {
    let unsupported = || TemplateError::Unsupported(inner.to_string());
    let (head, args) = words.split_first().ok_or_else(unsupported)?;
    if head.starts_with('.') {
        return if args.is_empty() {
            path(head).ok_or_else(unsupported).map(Expr::Path)
        } else {
            Err(unsupported())
        };
    }
    let func = match head.as_str() {
        "json" => Func::Json,
        "join" => Func::Join,
        "upper" => Func::Upper,
        "lower" => Func::Lower,
        "title" => Func::Title,
        "truncate" => Func::Truncate,
        "println" => Func::Println,
        _ => return Err(unsupported()),
    };
    let operands = args
        .iter()
        .map(|a| operand(a).ok_or_else(unsupported))
        .collect::<Result<Vec<_>, _>>()?;
    let arity_ok = match func {
        Func::Json | Func::Upper | Func::Lower | Func::Title => operands.len() == 1,
        Func::Join | Func::Truncate => operands.len() == 2,
        Func::Println => true,
    };
    if !arity_ok {
        return Err(TemplateError::Call(format!(
            "wrong number of arguments for {head} in {{{{{inner}}}}}"
        )));
    }
    Ok(Expr::Call(func, operands))
}

fn path(word: &str) -> Option<Vec<String>> {
    if word == "." {
        return Some(Vec::new());
    }
    let fields: Vec<String> = word
        .strip_prefix('.')?
        .split('.')
        .map(str::to_string)
        .collect();
    let valid = fields.iter().all(|f| {
        f.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && f.chars().all(|c| c.is_alphanumeric() || c == '_')
    });
    valid.then_some(fields)
}

fn operand(word: &str) -> Option<Operand> {
    if let Some(text) = word.strip_prefix('"') {
        return Some(Operand::Str(text.to_string()));
    }
    if word.starts_with('.') {
        return path(word).map(Operand::Path);
    }
    word.parse().ok().map(Operand::Int)
}

/// The first field of every path read from the top-level value (not inside `range`, where `.`
/// changes).
fn top_level_fields(nodes: &[Node], out: &mut Vec<String>) {
    let from_expr = |expr: &Expr, out: &mut Vec<String>| {
        let paths: Vec<&Vec<String>> = match expr {
            Expr::Path(p) => vec![p],
            Expr::Call(_, operands) => operands
                .iter()
                .filter_map(|o| match o {
                    Operand::Path(p) => Some(p),
                    _ => None,
                })
                .collect(),
        };
        out.extend(paths.into_iter().filter_map(|p| p.first().cloned()));
    };
    for node in nodes {
        match node {
            Node::Text(_) => {}
            Node::Print(expr) => from_expr(expr, out),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                from_expr(cond, out);
                top_level_fields(then, out);
                top_level_fields(otherwise, out);
            }
            Node::Range {
                over, otherwise, ..
            } => {
                from_expr(over, out);
                top_level_fields(otherwise, out);
            }
        }
    }
}

fn render_nodes(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Print(expr) => match eval(expr, dot)? {
                Some(Evaluated::Value(value)) => out.push_str(&go_print(&value)),
                Some(Evaluated::Text(text)) => out.push_str(&text),
                None => out.push_str("<no value>"),
            },
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if truthy(eval(cond, dot)?.as_ref()) {
                    then
                } else {
                    otherwise
                };
                render_nodes(branch, dot, out)?;
            }
            Node::Range {
                over,
                body,
                otherwise,
            } => {
                let items: Vec<Value> = match eval(over, dot)? {
                    Some(Evaluated::Value(Value::Array(items))) => items,
                    Some(Evaluated::Value(Value::Object(map))) => {
                        map.into_iter().map(|(_, v)| v).collect()
                    }
                    Some(Evaluated::Value(Value::Null)) | None => Vec::new(),
                    Some(other) => {
                        return Err(TemplateError::Call(format!(
                            "range can't iterate over {}",
                            other.describe()
                        )));
                    }
                };
                if items.is_empty() {
                    render_nodes(otherwise, dot, out)?;
                }
                for item in &items {
                    render_nodes(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

/// A value, or text a function made.
enum Evaluated {
    Value(Value),
    Text(String),
}

impl Evaluated {
    fn describe(&self) -> String {
        match self {
            Evaluated::Value(value) => go_print(value),
            Evaluated::Text(text) => text.clone(),
        }
    }
}

fn truthy(value: Option<&Evaluated>) -> bool {
    match value {
        None => false,
        Some(Evaluated::Text(text)) => !text.is_empty(),
        Some(Evaluated::Value(value)) => match value {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
        },
    }
}

/// Evaluates an expression; `None` is Go's "no value" (a missing map key).
fn eval(expr: &Expr, dot: &Value) -> Result<Option<Evaluated>, TemplateError> {
    match expr {
        Expr::Path(fields) => Ok(lookup(dot, fields)?.map(Evaluated::Value)),
        Expr::Call(func, operands) => {
            let mut args = Vec::new();
            for operand in operands {
                args.push(match operand {
                    Operand::Path(fields) => lookup(dot, fields)?,
                    Operand::Str(text) => Some(Value::String(text.clone())),
                    Operand::Int(n) => Some(Value::from(*n)),
                });
            }
            call(*func, args).map(|text| Some(Evaluated::Text(text)))
        }
    }
}

fn lookup(dot: &Value, fields: &[String]) -> Result<Option<Value>, TemplateError> {
    let mut current = dot;
    for field in fields {
        match current {
            Value::Object(map) => match map.get(field) {
                Some(value) => current = value,
                None => return Ok(None),
            },
            other => {
                return Err(TemplateError::NotAnObject {
                    field: field.clone(),
                    value: ellipsis(&go_print(other)),
                });
            }
        }
    }
    Ok(Some(current.clone()))
}

fn call(func: Func, args: Vec<Option<Value>>) -> Result<String, TemplateError> {
    let text = |value: &Option<Value>| match value {
        Some(value) => go_print(value),
        None => "<no value>".to_string(),
    };
    Ok(match func {
        // docker's json: encoding/json without HTML escaping, trailing newline trimmed.
        Func::Json => match args.first().cloned().flatten() {
            // A `Value`'s Display is its compact JSON, which cannot fail (no error to report).
            Some(value) => value.to_string(),
            None => "null".to_string(),
        },
        Func::Join => {
            let separator = args.get(1).map(text).unwrap_or_default();
            match args.first().cloned().flatten() {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(go_print)
                    .collect::<Vec<_>>()
                    .join(&separator),
                Some(Value::Null) | None => String::new(),
                Some(other) => {
                    return Err(TemplateError::Call(format!(
                        "join needs a list, not {}",
                        go_print(&other)
                    )));
                }
            }
        }
        Func::Upper => args.first().map(text).unwrap_or_default().to_uppercase(),
        Func::Lower => args.first().map(text).unwrap_or_default().to_lowercase(),
        Func::Title => title(&args.first().map(text).unwrap_or_default()),
        Func::Truncate => {
            let value = args.first().map(text).unwrap_or_default();
            let length = match args.get(1).cloned().flatten() {
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| TemplateError::Call(format!("truncate: bad length {n}")))?,
                other => {
                    return Err(TemplateError::Call(format!(
                        "truncate needs a length, not {}",
                        text(&other)
                    )));
                }
            };
            value.chars().take(length).collect()
        }
        Func::Println => {
            let mut line = args.iter().map(text).collect::<Vec<_>>().join(" ");
            line.push('\n');
            line
        }
    })
}

fn title(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    out
}

/// How Go's `fmt.Print` shows a decoded JSON value: strings bare, lists `[a b]`, objects
/// `map[k:v]` with sorted keys, null `<nil>`.
pub fn go_print(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_print).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_print(&map[k])))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
    }
}

/// Renders `rows` the way docker's formatter does with `format`: `table ...` prints the header
/// row (the template run on `header`) and aligns columns; `json` means `{{json .}}`; `\t` and
/// `\n` written literally in the format become tab and newline. Fields outside `known` are an
/// error.
pub fn render_rows(
    format: &str,
    rows: &[Value],
    header: &Value,
    known: &[&str],
) -> Result<String, TemplateError> {
    let is_table = format.starts_with("table");
    let body = if is_table {
        &format["table".len()..]
    } else if format == "json" {
        "{{json .}}"
    } else {
        format
    };
    let body = body
        .trim_matches(' ')
        .replace("\\t", "\t")
        .replace("\\n", "\n");
    let template = Template::parse(&body)?;
    template.check_fields(known)?;
    let mut out = String::new();
    if is_table {
        out.push_str(&template.render(header)?);
        out.push('\n');
    }
    for row in rows {
        // `json` stays JSON (printed by `term::write_json`); any other form shows each cell
        // escaped, so a newline or a tab in a name from an image cannot break the table.
        let shown = if format == "json" {
            template.render(row)?
        } else {
            template.render(&escape_strings(row))?
        };
        out.push_str(&shown);
        out.push('\n');
    }
    Ok(if is_table { tabulate(&out) } else { out })
}

/// `value` with every string in it (object keys included) escaped by
/// [`kiln::error::escape_line`]: what a template shows of a document from outside (an image's
/// labels, its history) when the result is text for a terminal.
pub fn escape_strings(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(kiln::error::escape_line(text)),
        Value::Array(items) => Value::Array(items.iter().map(escape_strings).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (kiln::error::escape_line(key), escape_strings(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// docker's tabwriter settings: minimum cell width 10, padding 3, spaces.
const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Aligns tab-terminated cells into columns with the elastic-tabstop algorithm of Go's
/// `text/tabwriter` (as docker configures it): a column is a run of consecutive lines that have
/// a cell there; its width is its widest cell plus the padding, at least the minimum width. A
/// line's text after its last tab is not part of any column.
pub fn tabulate(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut out = String::with_capacity(text.len() * 2);
    let mut widths = Vec::new();
    format_block(&lines, &mut out, &mut widths, 0, lines.len());
    out
}

fn cells_in_columns(line: &[&str]) -> usize {
    line.len().saturating_sub(1)
}

fn format_block(
    lines: &[Vec<&str>],
    out: &mut String,
    widths: &mut Vec<usize>,
    first: usize,
    end: usize,
) {
    let column = widths.len();
    let mut line0 = first;
    let mut this = first;
    while this < end {
        if column >= cells_in_columns(&lines[this]) {
            this += 1;
            continue;
        }
        write_lines(lines, out, widths, line0, this);
        line0 = this;
        let mut width = MIN_WIDTH;
        while this < end && column < cells_in_columns(&lines[this]) {
            width = width.max(lines[this][column].chars().count() + PADDING);
            this += 1;
        }
        widths.push(width);
        format_block(lines, out, widths, line0, this);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, out, widths, line0, end);
}

fn write_lines(lines: &[Vec<&str>], out: &mut String, widths: &[usize], first: usize, end: usize) {
    for (i, line) in lines.iter().enumerate().take(end).skip(first) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if let Some(width) = widths.get(j) {
                let pad = width.saturating_sub(cell.chars().count());
                let _ = write!(out, "{:pad$}", "");
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, dot: &Value) -> Result<String, TemplateError> {
        Template::parse(template)?.render(dot)
    }

    #[test]
    fn fields_functions_and_blocks() {
        let dot = json!({
            "Id": "sha256:abc",
            "RepoTags": ["a:1", "b:2"],
            "Config": {"Env": ["A=1", "B=2"], "Labels": {"z": "1", "a": "2"}, "User": ""},
            "Size": 42,
            "Empty": []
        });
        let cases = [
            ("{{.Id}}", "sha256:abc"),
            ("{{ .Id }}", "sha256:abc"),
            ("id={{.Id}} size={{.Size}}", "id=sha256:abc size=42"),
            ("{{.Config.Env}}", "[A=1 B=2]"),
            ("{{.Config.Labels}}", "map[a:2 z:1]"),
            ("{{.Config.Missing}}", "<no value>"),
            ("{{json .RepoTags}}", r#"["a:1","b:2"]"#),
            ("{{json .Config.Labels}}", r#"{"a":"2","z":"1"}"#),
            (r#"{{join .RepoTags ", "}}"#, "a:1, b:2"),
            ("{{upper .Id}}", "SHA256:ABC"),
            ("{{title \"hello world\"}}", "Hello World"),
            ("{{truncate .Id 6}}", "sha256"),
            ("{{println .Id .Size}}", "sha256:abc 42\n"),
            ("{{range .RepoTags}}[{{.}}]{{end}}", "[a:1][b:2]"),
            ("{{range .Empty}}x{{else}}none{{end}}", "none"),
            ("{{if .Config.User}}user{{else}}root{{end}}", "root"),
            ("{{if .RepoTags}}tagged{{end}}", "tagged"),
            ("a  {{- .Size -}}  b", "a42b"),
        ];
        for (template, want) in cases {
            assert_eq!(render(template, &dot).as_deref(), Ok(want), "{template}");
        }
    }

    #[test]
    fn bad_templates_are_clear_errors() {
        let dot = json!({"Id": "x"});
        let cases: &[(&str, &str)] = &[
            ("{{.Id", "unclosed action"),
            ("{{.Id | upper}}", "unsupported action {{.Id | upper}}"),
            ("{{$x := .Id}}", "unsupported action"),
            ("{{printf \"%s\" .Id}}", "unsupported action"),
            ("{{if .Id}}x", "missing {{end}} for {{if .Id}}"),
            ("{{end}}", "unexpected {{end}}"),
            ("{{json}}", "wrong number of arguments for json"),
            ("{{.Id.Sub}}", "can't evaluate field Sub in x"),
            ("{{range .Id}}{{end}}", "range can't iterate over x"),
        ];
        for (template, want) in cases {
            let err = render(template, &dot).unwrap_err().to_string();
            assert!(err.contains(want), "{template}: {err}");
        }
        let err = Template::parse("{{.Nope}} {{range .Items}}{{.Inner}}{{end}}")
            .unwrap()
            .check_fields(&["Items"])
            .unwrap_err();
        assert_eq!(
            err,
            TemplateError::UnknownField {
                field: "Nope".to_string(),
                known: ".Items".to_string()
            }
        );
    }

    #[test]
    fn tables_align_like_docker() {
        let rows = [
            json!({"Repository": "hello", "Tag": "latest", "ID": "0123456789ab"}),
            json!({"Repository": "127.0.0.1:5000/a/b", "Tag": "v1", "ID": "0123456789ab"}),
        ];
        let header = json!({"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID"});
        let known = ["Repository", "Tag", "ID"];
        let table = render_rows(
            "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}",
            &rows,
            &header,
            &known,
        )
        .unwrap();
        assert_eq!(
            table,
            "REPOSITORY           TAG       IMAGE ID\n\
             hello                latest    0123456789ab\n\
             127.0.0.1:5000/a/b   v1        0123456789ab\n"
        );
        let plain = render_rows("{{.Repository}}:{{.Tag}}", &rows, &header, &known).unwrap();
        assert_eq!(plain, "hello:latest\n127.0.0.1:5000/a/b:v1\n");
        let json = render_rows("json", &rows[..1], &header, &known).unwrap();
        assert_eq!(
            json,
            "{\"ID\":\"0123456789ab\",\"Repository\":\"hello\",\"Tag\":\"latest\"}\n"
        );
        let err = render_rows("{{.Nope}}", &rows, &header, &known).unwrap_err();
        assert!(err.to_string().contains("unknown field .Nope"), "{err}");
    }

    #[test]
    fn tabwriter_columns_are_contiguous_blocks() {
        // Go's own example: b and c are in distinct columns; d and e in none.
        let text = "aaaa\tbbb\td\naa\tb\tdd\na\t\naa\tcccc\teee\n";
        let want = [
            "aaaa      bbb       d",
            "aa        b         dd",
            "a         ",
            "aa        cccc      eee",
            "",
        ];
        assert_eq!(tabulate(text), want.join("\n"));
    }
}
