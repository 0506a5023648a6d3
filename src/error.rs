//! kiln's one error convention (issue 11), the one ripgrep, uv and anyhow's chains follow: an
//! error's `Display` says only what its own layer was doing (`cannot read /x`), and the error it
//! wraps is returned by `source()`, never interpolated into the message. Whoever prints an error
//! for a user walks the chain with [`Chain`], which renders it docker-style, `a: b: c` (the shape
//! `docker` and `moby` error strings have, so kiln's messages read the same as before), each
//! cause once.

use std::error::Error;
use std::fmt;

/// `text` with control characters other than newlines and tabs written as `\u{..}` (or `\r`), so
/// a name or a message from outside (a repository's file name, a server's reply) cannot drive
/// the terminal it is printed on.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
