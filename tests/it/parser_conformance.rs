//! The syntax parser against BuildKit's golden files and real Dockerfiles, plus table tests for
//! heredocs, directives, line endings, spans and hostile input.

use crate::support::conformance_dir;
use kiln::frontend::diagnostic::{Located, Position, Span};
use kiln::frontend::{SyntaxError, parse};
use std::path::Path;

fn dump_of(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&bytes)
        .map(|d| d.dump())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs every case, collects all mismatches, and checks how many cases ran.
fn check_cases(cases: Vec<(std::path::PathBuf, std::path::PathBuf)>, expected: usize) {
    let mut failures = Vec::new();
    for (input, result) in &cases {
        let want = std::fs::read_to_string(result).unwrap_or_default();
        match dump_of(input) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                input.display()
            )),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cases.len(), expected, "number of cases run");
}

fn sorted_dir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    entries.sort();
    entries
}

#[test]
fn buildkit_testfiles() {
    let Some(dir) = conformance_dir() else { return };
    let cases = sorted_dir(&dir.join("parser/buildkit-testfiles/testfiles"))
        .into_iter()
        .map(|case| (case.join("Dockerfile"), case.join("result")))
        .collect();
    check_cases(cases, 33);
}

#[test]
fn real_dockerfiles() {
    let Some(dir) = conformance_dir() else { return };
    let cases = sorted_dir(&dir.join("parser/real-dockerfiles"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.ends_with(".result") && name != "MANIFEST.tsv"
        })
        .map(|p| {
            let mut result = p.clone().into_os_string();
            result.push(".result");
            (p, result.into())
        })
        .collect();
    check_cases(cases, 160);
}

#[test]
fn buildkit_negative_testfiles() {
    let Some(dir) = conformance_dir() else { return };
    let cases = sorted_dir(&dir.join("parser/buildkit-testfiles/testfiles-negative"));
    let mut failures = Vec::new();
    for case in &cases {
        let bytes = std::fs::read(case.join("Dockerfile")).expect("negative case Dockerfile");
        match parse(&bytes) {
            Ok(d) => failures.push(format!("{}: parsed as {}", case.display(), d.dump())),
            Err(e) => {
                if e.span().is_none_or(|s| s.start.line == 0) {
                    failures.push(format!("{}: error without a line: {e}", case.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 4);
}

#[test]
fn buildkit_line_numbers() {
    let Some(dir) = conformance_dir() else { return };
    let bytes = std::fs::read(dir.join("parser/buildkit-testfiles/testfile-line/Dockerfile"))
        .expect("testfile-line exists");
    let d = parse(&bytes).expect("parses");
    let lines: Vec<_> = d
        .nodes
        .iter()
        .map(|n| (n.span.start.line, n.span.end.line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
    assert_eq!(d.nodes.first().map(|n| n.span.start.line), Some(5));
    assert_eq!(d.nodes.last().map(|n| n.span.end.line), Some(31));
}

fn parsed(src: &str) -> kiln::frontend::ast::Dockerfile {
    parse(src.as_bytes()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn failed(src: &[u8]) -> SyntaxError {
    match parse(src) {
        Ok(d) => panic!("{:?} parsed as {}", String::from_utf8_lossy(src), d.dump()),
        Err(e) => e,
    }
}

#[test]
fn dumps_table() {
    let cases: &[(&str, &str)] = &[
        (
            "FROM a\nRUN echo hi \\\n  there\n",
            "(from \"a\")\n(run \"echo hi   there\")\n",
        ),
        // Comment and blank lines inside a continuation are skipped.
        ("RUN a \\\n# c\n\n  b\n", "(run \"a   b\")\n"),
        ("FROM a\r\nRUN b\r\n", "(from \"a\")\n(run \"b\")\n"),
        ("\u{feff}FROM a\n", "(from \"a\")\n"),
        (
            "# escape=`\nRUN a `\n b\nCOPY c:\\x d\n",
            "(run \"a  b\")\n(copy \"c:\\\\x\" \"d\")\n",
        ),
        (
            "FROM a\n# escape=`\nRUN a \\\n b\n",
            "(from \"a\")\n(run \"a  b\")\n",
        ),
        (
            "ENV a=b c=\"d e\"\n",
            "(env \"a\" \"b\" \"=\" \"c\" \"\\\"d e\\\"\" \"=\")\n",
        ),
        ("ENV a  b c\n", "(env \"a\" \"b c\" \"\")\n"),
        ("ONBUILD RUN [\"a\"]\n", "(onbuild (run \"a\"))\n"),
        (
            "HEALTHCHECK --interval=5s CMD [\"a\", \"b\"]\n",
            "(healthcheck [\"--interval=5s\"] \"CMD\" \"a\" \"b\")\n",
        ),
        ("FOO bar baz\n", "(foo \"\")\n"),
        ("ARG a b=c\n", "(arg \"a\" \"b=c\")\n"),
        ("RUN\n", "(run)\n"),
        // A lone continuation gives an empty instruction, kept as BuildKit keeps it.
        ("\\\n\n", "(\"\")\n"),
    ];
    for (src, want) in cases {
        assert_eq!(parsed(src).dump(), *want, "{src:?}");
    }
}

#[test]
fn heredocs() {
    let d = parsed(
        "FROM a\nRUN <<EOF <<-'TABS' cat\necho $HOME\nEOF\n\t\tindented\n\tTABS\nCOPY <<\"X\" /dst\nbody\nX\nRUN [\"<<EOF\"]\n",
    );
    let run = &d.nodes[1];
    assert_eq!(run.heredocs.len(), 2);
    assert_eq!(
        (
            run.heredocs[0].name.as_str(),
            run.heredocs[0].content.as_str()
        ),
        ("EOF", "echo $HOME\n")
    );
    assert!(run.heredocs[0].expand && !run.heredocs[0].chomp);
    assert_eq!(run.heredocs[1].name, "TABS");
    assert_eq!(run.heredocs[1].content, "indented\n");
    assert!(!run.heredocs[1].expand && run.heredocs[1].chomp);
    assert_eq!((run.span.start.line, run.span.end.line), (2, 6));
    let copy = &d.nodes[2];
    assert_eq!(copy.heredocs[0].content, "body\n");
    assert!(!copy.heredocs[0].expand);
    assert!(d.nodes[3].heredocs.is_empty(), "JSON form has no heredocs");
    assert_eq!(
        d.dump(),
        "(from \"a\")\n(run \"<<EOF <<-'TABS' cat\")\n(copy \"<<\\\"X\\\"\" \"/dst\")\n(run \"<<EOF\")\n"
    );
    // Heredocs are only read for RUN, COPY and ADD (and those under ONBUILD).
    assert_eq!(parsed("FROM a\nCMD <<EOF\nEOF\n").nodes.len(), 3);
    assert_eq!(
        parsed("ONBUILD RUN <<EOF\nx\nEOF\n").nodes[0]
            .heredocs
            .len(),
        1
    );
    let e = failed(b"FROM a\nRUN <<EOF\nnever ends\n");
    assert!(matches!(e, SyntaxError::UnterminatedHeredoc { .. }), "{e}");
    assert_eq!(e.span().map(|s| s.start.line), Some(2));
}

#[test]
fn directives() {
    let d = parsed("# syntax=docker/dockerfile:1\n# Escape=`\n# check=skip=all\nFROM a\n");
    assert_eq!(d.directives.escape, '`');
    assert_eq!(
        d.directives.syntax.as_ref().map(|s| s.value.as_str()),
        Some("docker/dockerfile:1")
    );
    assert_eq!(
        d.directives
            .check
            .as_ref()
            .map(|s| (s.value.as_str(), s.line)),
        Some(("skip=all", 3))
    );
    assert!(
        d.nodes[0].comments.is_empty(),
        "directives are not comments"
    );
    let e = failed(b"# syntax=a\n# syntax=b\nFROM a\n");
    assert!(matches!(e, SyntaxError::DuplicateDirective { .. }), "{e}");
    assert_eq!(e.span().map(|s| s.start.line), Some(2));
    let e = failed(b"# escape=x\nFROM a\n");
    assert!(matches!(e, SyntaxError::InvalidEscape { .. }), "{e}");
    // After an instruction, or after an unknown directive, it is only a comment.
    for src in [
        "FROM a\n# escape=`\nRUN b\n",
        "# foo=bar\n# escape=`\nFROM a\n",
        "\n# escape=`\nFROM a\n",
    ] {
        let d = parsed(src);
        assert_eq!(d.directives.escape, '\\', "{src:?}");
        assert!(d.directives.escape_directive.is_none(), "{src:?}");
    }
    let d = parsed("# hello\n# world\nFROM a\n");
    assert_eq!(d.nodes[0].comments, vec!["hello", "world"]);
}

#[test]
fn spans_columns_and_positions() {
    let d = parsed("FROM a\n  RUN echo \\\n\t--x \\\n  b\n");
    let run = &d.nodes[1];
    assert_eq!(run.span.start, Position::new(2, 3));
    assert_eq!(run.span.end.line, 4);
    assert_eq!(run.original, "RUN echo \t--x   b");
    let x = run.original.find("--x").expect("--x in original");
    assert_eq!(run.position_of(x), Position::new(3, 2));
    let b = run.original.find('b').expect("b in original");
    assert_eq!(run.position_of(b), Position::new(4, 3));
    assert_eq!(run.find_span("--x"), Span::on_line(3, 2, 3));
    // Columns count characters, not bytes.
    let d = parsed("# é\nFROM é\n");
    assert_eq!(d.nodes[0].span.end, Position::new(2, 7));
}

#[test]
fn hostile_input_is_an_error_not_a_panic() {
    let e = failed(b"FROM a\nRUN \xff\n");
    assert!(matches!(e, SyntaxError::InvalidUtf8 { .. }), "{e}");
    assert_eq!(e.span().map(|s| s.start), Some(Position::new(2, 5)));
    let e = failed(b"FROM a\nRUN a\0b\n");
    assert!(matches!(e, SyntaxError::NulByte { .. }), "{e}");
    assert_eq!(e.span().map(|s| s.start), Some(Position::new(2, 6)));
    let big = format!("FROM a\nRUN {}\n", "x".repeat(1 << 20));
    assert!(matches!(
        failed(big.as_bytes()),
        SyntaxError::LineTooLong { .. }
    ));
    let at_limit = format!("RUN {}\n", "x".repeat(65_535 - 4));
    assert!(parse(at_limit.as_bytes()).is_ok());
    let over = format!("RUN {}\n", "x".repeat(65_536 - 4));
    assert!(matches!(
        failed(over.as_bytes()),
        SyntaxError::LineTooLong { .. }
    ));
    for empty in [&b""[..], b"\n\n", b"# only\n# comments\n", b"\xef\xbb\xbf"] {
        assert!(matches!(failed(empty), SyntaxError::NoInstructions { .. }));
    }
    let weird: &[&[u8]] = &[
        b"\\",
        b"`\n",
        b"RUN [",
        b"RUN [\"\\ud800\"]",
        b"ENV \"",
        b"ENV a=\"b",
        b"LABEL =",
        b"ARG \\",
        b"COPY --",
        b"COPY --from",
        b"COPY --a=\"\\",
        b"HEALTHCHECK \xc2\xa0x",
        b"RUN <<",
        b"RUN <<'",
        b"RUN <<\"EOF\nEOF",
        b"ONBUILD",
        b"ONBUILD ONBUILD ONBUILD RUN x",
        b"\t \r\n\x0b\x0c",
        b"RUN \xe0\xa0\x80",
        b"COPY --x=\xe0\xa0\x80\xe0\xa0\x80 y",
    ];
    for input in weird {
        let _ = parse(input);
    }
    let deep = format!("CMD [1, {}]\n", "[".repeat(30_000));
    assert_eq!(parsed(&deep).nodes[0].args.len(), 1);
    let nested = format!("{}RUN x\n", "ONBUILD ".repeat(1000));
    assert!(matches!(
        failed(nested.as_bytes()),
        SyntaxError::OnbuildTooDeep { .. }
    ));
}

#[test]
fn long_continued_instruction_is_joined() {
    // 200k continuation lines: exercises the join loop at a size where quadratic work would
    // make this test hang (no timing assertion: the result is what is checked).
    let long = format!("RUN {}\n", "a \\\n".repeat(200_000));
    let d = parsed(&long);
    assert_eq!(d.nodes.len(), 1);
    let node = &d.nodes[0];
    assert_eq!(node.span.start.line, 1);
    assert_eq!(node.span.end.line, 200_001);
    assert_eq!(node.args, vec!["a ".repeat(200_000).trim_end().to_string()]);
}
