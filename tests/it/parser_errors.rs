//! Snapshots of rendered syntax errors: message, location, snippet, caret and help.

use kiln::frontend::diagnostic::{Located, render_error};
use kiln::frontend::parse;

fn rendered(source: &[u8]) -> String {
    let err = match parse(source) {
        Ok(d) => panic!("parsed as {}", d.dump()),
        Err(e) => e,
    };
    assert!(err.span().is_some(), "syntax errors have a span: {err}");
    render_error("Dockerfile", &String::from_utf8_lossy(source), &err)
}

#[test]
fn unterminated_heredoc() {
    insta::assert_snapshot!(rendered(b"FROM alpine\nRUN <<EOF\necho hi\n"));
}

#[test]
fn nested_json() {
    insta::assert_snapshot!(rendered(
        b"FROM alpine\nCMD [ \"echo\", [ \"nested json\" ] ]\n"
    ));
}

#[test]
fn env_without_value() {
    insta::assert_snapshot!(rendered(b"FROM alpine\nENV PATH\n"));
}

#[test]
fn env_word_without_equals() {
    insta::assert_snapshot!(rendered(b"FROM alpine\nENV a=b c\n"));
}

#[test]
fn invalid_utf8() {
    insta::assert_snapshot!(rendered(b"FROM alpine\nRUN echo caf\xe9\n"));
}

#[test]
fn nul_byte() {
    insta::assert_snapshot!(rendered(b"FROM alpine\0\n"));
}

#[test]
fn line_too_long() {
    let src = format!("FROM alpine\nRUN echo {}\n", "x".repeat(70_000));
    insta::assert_snapshot!(rendered(src.as_bytes()));
}

#[test]
fn duplicate_directive() {
    insta::assert_snapshot!(rendered(
        b"# syntax=docker/dockerfile:1\n# syntax=other\nFROM alpine\n"
    ));
}

#[test]
fn bad_escape_directive() {
    insta::assert_snapshot!(rendered(b"# escape=x\nFROM alpine\n"));
}

#[test]
fn no_instructions() {
    insta::assert_snapshot!(rendered(b"# just a comment\n\n"));
}
