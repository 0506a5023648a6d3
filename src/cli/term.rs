//! kiln's own text on stdout and stderr, written in one place: every piece is escaped on its way
//! out ([`kiln::error::escape_controls`]: control characters and bidirectional overrides shown as
//! `\u{1b}`, newlines and tabs kept), so a name from an image, a tar, a registry, a URL, a git
//! repository or a Dockerfile that reaches a message, a table or a progress line cannot drive the
//! terminal. `clippy.toml` forbids `println!`, `eprintln!`, `print!`, `eprint!`,
//! `std::io::stdout` and `std::io::stderr` elsewhere: a new output either goes through here or
//! says, in an `#[allow]`, why its bytes are not kiln's text (an archive written to stdout, a
//! container's own output).
//!
//! JSON keeps its form: serde escapes C0 control characters but writes DEL and C1 raw, so
//! [`write_json`] writes those as the JSON escapes `\u007f`..`\u009f` (the same string to a JSON
//! reader). A string from outside inside one line (a name in a table cell, an error's link) is
//! escaped where it is formatted, with [`kiln::error::escape_line`], so a newline in it cannot
//! start a line of its own.

use kiln::error::escape_controls;
use std::io::{self, Write};

/// `format!` then [`write_stdout`], with a newline.
macro_rules! outln {
    () => {
        $crate::cli::term::write_stdout("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::term::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `format!` then [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::term::write_stdout(&format!($($arg)*))
    };
}

/// `format!` then [`write_stderr`], with a newline.
macro_rules! errln {
    () => {
        $crate::cli::term::write_stderr("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::term::write_stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `format!` then [`write_stderr`].
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::cli::term::write_stderr(&format!($($arg)*))
    };
}

pub(crate) use {err, errln, out, outln};

/// Writes `text` to stdout, escaped ([`escape_controls`]).
pub fn write_stdout(text: &str) -> io::Result<()> {
    #[allow(clippy::disallowed_methods)] // The one place kiln's text reaches stdout.
    let mut stdout = io::stdout().lock();
    stdout.write_all(escape_controls(text).as_bytes())?;
    stdout.flush()
}

/// Writes `text` to stderr, escaped ([`escape_controls`]).
pub fn write_stderr(text: &str) -> io::Result<()> {
    #[allow(clippy::disallowed_methods)] // The one place kiln's text reaches stderr.
    let mut stderr = io::stderr().lock();
    stderr.write_all(escape_controls(text).as_bytes())?;
    stderr.flush()
}

/// Whether stderr is a terminal (the progress looks choose by it).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal as _;
    #[allow(clippy::disallowed_methods)] // Asks, writes nothing.
    let stderr = io::stderr();
    stderr.is_terminal()
}

/// Writes `json` (serde's output) to stdout, DEL and C1 characters as JSON escapes.
pub fn write_json(json: &str) -> io::Result<()> {
    #[allow(clippy::disallowed_methods)] // JSON keeps its form: see the module doc.
    let mut stdout = io::stdout().lock();
    stdout.write_all(json_safe(json).as_bytes())?;
    stdout.flush()
}

/// Writes `value` as docker's `inspect` prints its documents: pretty JSON indented by four
/// spaces, a final newline, through [`write_json`].
pub fn write_docker_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut bytes, formatter);
    value.serialize(&mut serializer)?;
    let mut text = String::from_utf8(bytes)?;
    text.push('\n');
    Ok(write_json(&text)?)
}

/// `json` with DEL and C1 control characters (which serde leaves raw) and the bidirectional
/// overrides written as `\uXXXX` escapes; serde already escaped every C0 character, so nothing
/// else in a JSON document can drive a terminal.
pub fn json_safe(json: &str) -> String {
    if !json.chars().any(kiln::error::is_unsafe_char) {
        return json.to_string();
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if kiln::error::is_unsafe_char(c) && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A writer that escapes what passes through it as [`write_stderr`] does, for a renderer that
/// is handed a writer (the plain progress look). A multi-byte character split between two
/// writes is held back until it is whole; bytes that are not UTF-8 are written `\xNN`.
pub struct Escaping<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> Escaping<W> {
    pub fn new(inner: W) -> Self {
        Escaping {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(data);
        let mut shown = String::new();
        let mut used = 0;
        for chunk in self.pending.utf8_chunks() {
            shown.push_str(&escape_controls(chunk.valid()));
            used += chunk.valid().len();
            let invalid = chunk.invalid();
            // An incomplete character at the very end may be completed by the next write.
            if used + invalid.len() == self.pending.len() && is_incomplete_start(invalid) {
                break;
            }
            for byte in invalid {
                shown.push_str(&format!("\\x{byte:02x}"));
            }
            used += invalid.len();
        }
        self.inner.write_all(shown.as_bytes())?;
        self.pending.drain(..used);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.inner
                .write_all(kiln::error::escape_bytes(&rest).as_bytes())?;
        }
        self.inner.flush()
    }
}

/// Whether `bytes` (1 to 3 of them) could be the start of a UTF-8 character still to come.
fn is_incomplete_start(bytes: &[u8]) -> bool {
    let Some(&lead) = bytes.first() else {
        return false;
    };
    let need = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return false,
    };
    bytes.len() < need && bytes[1..].iter().all(|b| b & 0xc0 == 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stays_json_with_del_and_c1_escaped() {
        let value = serde_json::json!({"label": "a\u{1b}[2J\u{9b}2J\u{7f}\u{202e}"});
        let text = serde_json::to_string(&value).unwrap();
        let safe = json_safe(&text);
        assert_eq!(safe, r#"{"label":"a\u001b[2J\u009b2J\u007f\u202e"}"#);
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, value, "the same document to a JSON reader");
    }

    #[test]
    fn the_escaping_writer_escapes_across_split_writes() {
        let mut out = Escaping::new(Vec::new());
        let text = "é\u{1b}[2J\u{9b}ok\n".as_bytes();
        for byte in text {
            out.write_all(std::slice::from_ref(byte)).unwrap();
        }
        out.write_all(b"\xff\n").unwrap();
        out.flush().unwrap();
        assert_eq!(
            String::from_utf8(out.inner).unwrap(),
            "é\\u{1b}[2J\\u{9b}ok\n\\xff\n"
        );
    }
}
