//! Dockerfile syntax: bytes → [`Dockerfile`]. (Placeholder until the parser lands.)

use super::ast::Dockerfile;
use crate::diagnostic::{Located, Span};

/// A Dockerfile that cannot be parsed.
#[derive(Debug, thiserror::Error)]
pub enum SyntaxError {
    #[error("{message}")]
    Invalid { message: String, span: Span },
}

impl Located for SyntaxError {
    fn span(&self) -> Option<Span> {
        match self {
            SyntaxError::Invalid { span, .. } => Some(*span),
        }
    }
}

/// Parses a whole Dockerfile.
pub fn parse(_source: &[u8]) -> Result<Dockerfile, SyntaxError> {
    Err(SyntaxError::Invalid {
        message: "the parser is not written yet".into(),
        span: Span::line(1),
    })
}
