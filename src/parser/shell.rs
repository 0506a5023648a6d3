//! Word expansion with BuildKit's semantics. (Placeholder API until the lexer lands.)

use std::collections::HashMap;

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (set-but-empty is `Some("")`).
    fn lookup(&self, name: &str) -> Option<String>;
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Ordered `(name, value)` pairs; a later entry wins over an earlier one of the same name.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// A word that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    pub message: String,
    /// Byte offset in the word where the problem is.
    pub offset: usize,
}

/// Expands words the way BuildKit's `shell.Lex` does.
#[derive(Debug, Clone)]
pub struct Lexer {
    pub escape: char,
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// Expands one word: variables substituted, quotes and escapes removed, no splitting.
    pub fn expand_word(&self, word: &str, _env: &dyn Env) -> Result<String, ExpandError> {
        Ok(word.to_string())
    }

    /// Expands and splits into words on unquoted whitespace.
    pub fn expand_words(&self, word: &str, _env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        Ok(word.split_whitespace().map(str::to_string).collect())
    }
}
