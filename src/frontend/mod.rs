//! The Dockerfile front end: syntax, typed instructions, stages and word expansion.
//!
//! - [`syntax`]: bytes → [`ast::Dockerfile`] (directives, continuations, heredocs, JSON/shell
//!   form, flags), agreeing with BuildKit's parser; [`ast::Node::dump`] prints BuildKit's dump.
//! - [`shell`]: word expansion (`$V`, `${V:-x}`, quotes, escapes) with BuildKit's semantics.
//! - [`instruction`]: AST nodes → typed instructions, flags checked.
//! - [`stage`]: instructions grouped into stages, ARG scoping, arguments expanded.
//! - [`limits`]: the Dockerfile's size cap (the one bounded reader) and its stage and
//!   instruction counts.

pub mod ast;
pub mod context;
pub mod dag;
pub mod diagnostic;
pub mod dispatch;
pub mod dump;
pub mod instruction;
pub mod limits;
pub mod lint;
pub mod outline;
pub mod plan;
pub mod shell;
pub mod stage;
pub mod syntax;

pub use syntax::{SyntaxError, parse};
