//! kiln's one error convention (issue 11), the one ripgrep, uv and anyhow's chains follow: an
//! error's `Display` says only what its own layer was doing (`cannot read /x`), and the error it
//! wraps is returned by `source()`, never interpolated into the message. Whoever prints an error
//! for a user walks the chain with [`Chain`], which renders it docker-style, `a: b: c` (the shape
//! `docker` and `moby` error strings have, so kiln's messages read the same as before), each
//! cause once.

use std::error::Error;
use std::fmt;

/// kiln's one convention for showing text from outside (an image, a tar, a registry, a URL, a
/// git repository, a Dockerfile) on a terminal, so it cannot clear the screen, retitle the
/// window, move the cursor or fake a line of kiln's output:
///
/// - control characters (C0, ESC among them, DEL, C1 `U+0080..=U+009F`) and the Unicode
///   bidirectional overrides and isolates (`U+202A..=U+202E`, `U+2066..=U+2069`, which reorder
///   what a reader sees) are written as Rust's `char::escape_debug` writes them, without the
///   quotes and without escaping `\` or quotes: `\u{1b}`, `\u{9b}`, `\u{202e}`, `\r`, `\n`, `\t`;
/// - bytes that are not UTF-8 (a tar name, a path) are written `\xNN` ([`escape_bytes`]).
///
/// This function is for a sink that prints kiln's own multi-line text (a rendered snippet, a
/// table): newlines and tabs stay. A string from outside placed inside a line is escaped with
/// [`escape_line`] (or shown through [`Escaped`]), which escapes newlines and tabs too.
pub fn escape_controls(text: &str) -> String {
    escape(text, |c| c == '\n' || c == '\t')
}

/// `text` with every character [`escape_controls`] escapes, newlines and tabs included: one
/// string from outside shown inside a line of kiln's, which it cannot end.
pub fn escape_line(text: &str) -> String {
    escape(text, |_| false)
}

/// `bytes` as [`escape_line`] shows text, each byte that is not part of valid UTF-8 as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape_line(chunk.valid()));
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Whether `c` is shown escaped: a control character (C0, DEL, C1) or a bidirectional override
/// or isolate.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(text: &str, keep: impl Fn(char) -> bool) -> String {
    if !text.chars().any(|c| is_unsafe_char(c) && !keep(c)) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_char(c) && !keep(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A string from outside, displayed as [`escape_line`] shows it: for an error or a message that
/// embeds a name it cannot vouch for (`#[error("cannot read {}", Escaped(&name))]`).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_line(self.0))
    }
}

/// A path (or any OS string) from outside, displayed as [`escape_bytes`] shows its bytes.
pub struct EscapedPath<'a>(pub &'a std::path::Path);

impl fmt::Display for EscapedPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::ffi::OsStrExt as _;
        f.write_str(&escape_bytes(self.0.as_os_str().as_bytes()))
    }
}

/// An error's chain as [`Chain`] prints it (`a: b: c`), each link escaped by [`escape_line`]: the
/// form every printed error takes, so a name from outside anywhere in the chain can neither
/// drive the terminal nor start a line of its own.
pub struct EscapedChain<'a, E: Error + ?Sized>(pub &'a E);

impl<E: Error + ?Sized> fmt::Display for EscapedChain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape_line(&self.0.to_string()))?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {}", escape_line(&cause.to_string()))?;
            source = cause.source();
        }
        Ok(())
    }
}

/// The cause of an error, boxed: a typed error (`serde_json::Error`, a [`crate::oci::Digest`]
/// parse error...), or a reason kiln composed itself (`String` converts into it), printed as the
/// next layer of the chain either way.
pub type Cause = Box<dyn Error + Send + Sync>;

/// A reason kiln composed (`entry 3 has an unusable digest`), with the error behind it when there
/// is one: the link in a chain for a variant whose reasons are sometimes kiln's own and sometimes
/// another error's.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
pub struct Reason {
    text: String,
    #[source]
    source: Option<Cause>,
}

impl Reason {
    /// A reason with nothing behind it.
    pub fn new(text: impl Into<String>) -> Reason {
        Reason {
            text: text.into(),
            source: None,
        }
    }

    /// A reason and the error that caused it.
    pub fn caused_by(text: impl Into<String>, source: impl Into<Cause>) -> Reason {
        Reason {
            text: text.into(),
            source: Some(source.into()),
        }
    }
}

/// Displays an error followed by each of its sources, `a: b: c`.
pub struct Chain<'a, E: Error + ?Sized>(pub &'a E);

impl<E: Error + ?Sized> fmt::Display for Chain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// `err` and its sources as one line, `a: b: c` (see [`Chain`]).
pub fn chain<E: Error + ?Sized>(err: &E) -> String {
    Chain(err).to_string()
}

/// The first link of `err`'s chain whose message contains its source's message, as (message,
/// source's message): what the convention forbids. `None` when every layer says only its own.
pub fn repeated_cause<E: Error + ?Sized>(err: &E) -> Option<(String, String)> {
    let mut source = err.source()?;
    let mut current = err.to_string();
    loop {
        let cause = source.to_string();
        if current.contains(&cause) {
            return Some((current, cause));
        }
        source = source.source()?;
        current = cause;
    }
}

/// Asserts that no error in `err`'s chain repeats its source's message.
#[cfg(test)]
pub(crate) fn assert_layered<E: Error + ?Sized>(err: &E) {
    if let Some((current, cause)) = repeated_cause(err) {
        panic!("{current:?} repeats its source's message {cause:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Layer {
        #[error("cannot push image")]
        Push(#[source] Box<Layer>),
        #[error("cannot upload blob sha256:abc")]
        Upload(#[source] std::io::Error),
    }

    #[test]
    fn a_chain_prints_each_message_once_in_order() {
        let err = Layer::Push(Box::new(Layer::Upload(std::io::Error::other(
            "connection refused",
        ))));
        assert_layered(&err);
        assert_eq!(
            chain(&err),
            "cannot push image: cannot upload blob sha256:abc: connection refused"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_kilns_own_newlines_kept_only_where_asked() {
        let hostile = "a\x1b[2J\x1b]0;title\x07\nb\tc\u{9b}d\u{7f}\u{202e}é";
        assert_eq!(
            escape_controls(hostile),
            "a\\u{1b}[2J\\u{1b}]0;title\\u{7}\nb\tc\\u{9b}d\\u{7f}\\u{202e}é"
        );
        assert_eq!(
            escape_line(hostile),
            "a\\u{1b}[2J\\u{1b}]0;title\\u{7}\\nb\\tc\\u{9b}d\\u{7f}\\u{202e}é"
        );
        assert_eq!(escape_line("plain C:\\dir \"q\""), "plain C:\\dir \"q\"");
        assert_eq!(escape_bytes(b"ok\xff\x1b\xc3"), "ok\\xff\\u{1b}\\xc3");
        assert_eq!(
            EscapedPath(std::path::Path::new("/a\nb")).to_string(),
            "/a\\nb"
        );
    }

    #[test]
    fn a_printed_chain_escapes_newlines_in_every_link() {
        let err = Layer::Upload(std::io::Error::other("x\nerror: fake\x1b[2J"));
        assert_eq!(
            EscapedChain(&err).to_string(),
            "cannot upload blob sha256:abc: x\\nerror: fake\\u{1b}[2J"
        );
    }

    #[test]
    fn an_error_without_source_is_its_message() {
        assert_eq!(chain(&std::io::Error::other("gone")), "gone");
    }

    #[test]
    #[should_panic(expected = "repeats its source's message")]
    fn a_message_that_embeds_its_source_is_caught() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Embeds(#[source] std::io::Error);
        assert_layered(&Embeds(std::io::Error::other("inner")));
    }
}
