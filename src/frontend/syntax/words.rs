//! Word-level splitting as BuildKit's parser does it: instruction flags (`extractBuilderFlags`),
//! ENV/LABEL/ARG words (`parseWords`), whitespace-delimited lists, and heredoc markers.
//!
//! Go's `unicode.IsSpace` is the Unicode White_Space property, so `char::is_whitespace` and
//! `str::trim` are exactly BuildKit's `unicode.IsSpace` and `strings.TrimSpace`.

use std::borrow::Cow;

use nom::Parser;
use nom::bytes::complete::{tag, take_while};
use nom::character::complete::char;
use nom::combinator::{opt, rest};

use crate::frontend::shell::Lexer;

/// Go's `unicode.IsSpace` applied to a single byte turned into a rune, as BuildKit's byte-wise
/// loops do: Latin-1 NEL (0x85) and NBSP (0xA0) count, even when they are part of a UTF-8 char.
pub fn is_go_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// The bytes `s[from..to]` as a string, borrowed when the cut is on character boundaries; when
/// BuildKit's byte-wise scanning cut inside a UTF-8 character the broken bytes become U+FFFD (Go
/// would keep them raw).
pub fn byte_slice(s: &str, from: usize, to: usize) -> Cow<'_, str> {
    match s.get(from..to) {
        Some(piece) => Cow::Borrowed(piece),
        None => String::from_utf8_lossy(s.as_bytes().get(from..to).unwrap_or_default()),
    }
}

/// BuildKit's whitespace class for splitting arguments: `[\t\v\f\r ]+`.
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// BuildKit's `parseStringsWhitespaceDelimited`: `reWhitespace.Split(s, -1)` of the trimmed rest
/// of the line, so the words between runs of spaces, and none for an empty `s`.
pub fn split_whitespace(s: &str) -> Vec<String> {
    s.split(is_split_space)
        .filter(|word| !word.is_empty())
        .map(String::from)
        .collect()
}

/// `reWhitespace.Split(s, 2)`: the first word and the rest after the first whitespace run.
pub fn split_first_whitespace(s: &str) -> (&str, Option<&str>) {
    match s.find(is_split_space) {
        Some(at) => (&s[..at], Some(s[at..].trim_start_matches(is_split_space))),
        None => (s, None),
    }
}

/// BuildKit's `extractBuilderFlags`: leading `--name=value` words. Returns the flags and the
/// rest of the line. The file's `escape` character takes the next byte literally (under
/// `# escape=`` ` `` a `\` is an ordinary byte, so `target=C:\cache` keeps it). It scans bytes,
/// so each byte of a non-ASCII flag becomes one Latin-1 char, exactly as BuildKit's
/// `WriteRune(rune(byte))` does.
pub fn extract_flags(line: &str, escape: char) -> (Vec<String>, Cow<'_, str>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let bytes = line.as_bytes();
    // The escape character is `\` or `` ` ``, so always one byte.
    let escape = u8::try_from(escape).ok();
    let mut words: Vec<String> = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= bytes.len() {
        let at_end = pos == bytes.len();
        let ch = bytes.get(pos).copied().unwrap_or(0);
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_go_space_byte(ch) {
                pos += 1;
                continue;
            }
            let starts_flag = ch == b'-' && bytes.get(pos + 1) == Some(&b'-');
            if !starts_flag {
                return (words, byte_slice(line, pos, bytes.len()));
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_go_space_byte(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (words, byte_slice(line, pos, bytes.len()));
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if Some(ch) == escape {
                if pos + 1 == bytes.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = bytes[pos];
            }
            word.push(char::from(c));
            pos += 1;
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if Some(ch) == escape {
            if pos + 1 == bytes.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = bytes[pos];
        }
        word.push(char::from(c));
        pos += 1;
    }
    (words, Cow::Borrowed(""))
}

/// BuildKit's `parseWords` (ENV, LABEL, ARG): words split on whitespace, quotes and escapes kept
/// in the words but respected when splitting.
pub fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut chars = rest.chars();
    loop {
        let Some(ch) = chars.next() else {
            if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        };
        if phase == Phase::Spaces {
            if ch.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = ch;
            if ch == escape {
                match chars.next() {
                    // An escape at the very end is dropped.
                    None => continue,
                    Some(next) => {
                        word.push(ch);
                        c = next;
                    }
                }
            }
            word.push(c);
            continue;
        }
        // Inside quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if ch == escape && quote != '\'' {
            match chars.next() {
                None => {
                    phase = Phase::Word;
                    continue;
                }
                Some(next) => {
                    word.push(ch);
                    c = next;
                }
            }
        }
        word.push(c);
    }
    words
}

/// A heredoc marker found on an instruction line.
#[derive(Debug, PartialEq, Eq)]
pub struct Marker {
    /// The delimiter with quotes and escapes removed.
    pub name: String,
    /// `<<-`: leading tabs are stripped from the body and the delimiter line.
    pub chomp: bool,
    /// No part of the delimiter was quoted, so the body is expanded.
    pub expand: bool,
}

/// A word of the form `<<WORD` whose delimiter the shell lexer cannot read, such as
/// `<<${X:-\"}` (BuildKit fails the parse on it).
#[derive(Debug, PartialEq, Eq)]
pub struct BadMarker {
    /// The whole word as the line lexer gave it, quotes and escapes kept.
    pub word: String,
    /// What the lexer reported.
    pub message: String,
}

/// BuildKit's `heredocsFromLine`: the line split into shell words with the escape character
/// `\` whatever the directive says, quotes, escapes and unset variables kept, and every word of
/// the form `[fd]<<[-]WORD` read as a heredoc marker. A line that does not lex (an unclosed
/// quote or `${`) has no heredocs, as BuildKit ignores that error.
pub(crate) fn heredoc_markers(line: &str) -> Result<Vec<Marker>, BadMarker> {
    let words = Lexer::new('\\')
        .with_raw_quotes(true)
        .with_raw_escapes(true)
        .with_skip_unset_env(true)
        .expand_words(line, &NO_ENV)
        .unwrap_or_default();
    words.iter().filter_map(|w| marker(w).transpose()).collect()
}

/// Heredoc delimiters are read without any variables set.
const NO_ENV: &[(String, String)] = &[];

/// BuildKit's `ParseHeredoc`: `^(\d*)<<(-?)\s*([^<]*)$`, then the delimiter must lex to exactly
/// one word; it is quoted (no expansion of the body) when lexing with quotes kept shows quotes
/// that lexing without them removed. The regexp's `-?` is greedy, so `<<-` alone has an empty
/// delimiter (no heredoc), and Go's `\s` is `[\t\n\f\r ]`.
pub(crate) fn marker(word: &str) -> Result<Option<Marker>, BadMarker> {
    let parsed: nom::IResult<&str, (&str, &str, Option<char>, &str, &str)> = (
        take_while(|c: char| c.is_ascii_digit()),
        tag("<<"),
        opt(char('-')),
        take_while(|c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ')),
        rest,
    )
        .parse(word);
    let Ok((_, (_, _, dash, _, delimiter))) = parsed else {
        return Ok(None);
    };
    if delimiter.is_empty() || delimiter.contains('<') {
        return Ok(None);
    }
    let bad = |message: String| BadMarker {
        word: word.to_string(),
        message,
    };
    let lexer = Lexer::new('\\').with_skip_unset_env(true);
    let unquoted = lexer
        .expand_words(delimiter, &NO_ENV)
        .map_err(|e| bad(e.message))?;
    // No word (`<<''`) or several: not a heredoc.
    let Ok([name]) = <[String; 1]>::try_from(unquoted) else {
        return Ok(None);
    };
    let raw = lexer
        .with_raw_quotes(true)
        .expand_words(delimiter, &NO_ENV)
        .map_err(|e| bad(e.message))?;
    let Ok([raw]) = <[String; 1]>::try_from(raw) else {
        return Err(bad(format!(
            "lexing {delimiter:?} with and without quotes gave different words"
        )));
    };
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Marker {
        expand: quotes(&name) == quotes(&raw),
        name,
        chomp: dash.is_some(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_buildkit_extracts_them() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("--from=a b c", &["--from=a"], "b c"),
            ("--from a b", &["--from"], "a b"),
            ("--a --b=c d", &["--a", "--b=c"], "d"),
            ("-- --x y", &[], " --x y"),
            ("--m='a b' x", &["--m=a b"], "x"),
            ("--x=é y", &["--x=\u{c3}\u{a9}"], "y"),
            ("plain", &[], "plain"),
            ("--only", &["--only"], ""),
            // The default escape removes a backslash, an escaped one stays single.
            (
                r"--mount=target=C:\cache x",
                &["--mount=target=C:cache"],
                "x",
            ),
            (r"--m=C:\\c --n='a\'b' x", &[r"--m=C:\c", "--n=a'b"], "x"),
        ];
        for (line, flags, rest) in cases {
            let (f, r) = extract_flags(line, '\\');
            assert_eq!(
                (f, &*r),
                (flags.iter().map(|s| s.to_string()).collect(), *rest),
                "{line}"
            );
        }
    }

    #[test]
    fn flags_under_backtick_escape_keep_backslashes() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                r"--mount=type=cache,target=C:\cache echo",
                &[r"--mount=type=cache,target=C:\cache"],
                "echo",
            ),
            (
                r#"--a="C:\x y" --b=`` --c=`"q x"#,
                &[r"--a=C:\x y", "--b=`", "--c=\"q"],
                "x",
            ),
            // A trailing escape is dropped, as `\` is under the default escape.
            ("--a=b`", &["--a=b"], ""),
        ];
        for (line, flags, rest) in cases {
            let (f, r) = extract_flags(line, '`');
            assert_eq!(
                (f, &*r),
                (flags.iter().map(|s| s.to_string()).collect(), *rest),
                "{line}"
            );
        }
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            parse_words(r#"a="b c" d\ e 'f g'"#, '\\'),
            vec![r#"a="b c""#, r"d\ e", "'f g'"]
        );
        assert_eq!(parse_words("x=`\"y", '`'), vec!["x=`\"y"]);
        assert_eq!(parse_words("''", '\\'), vec!["''"]);
    }

    #[test]
    fn heredoc_markers_as_buildkit_finds_them() {
        let m = |name: &str, chomp, expand| Marker {
            name: name.into(),
            chomp,
            expand,
        };
        let cases: &[(&str, Vec<Marker>)] = &[
            ("RUN <<EOF", vec![m("EOF", false, true)]),
            ("RUN <<-EOF", vec![m("EOF", true, true)]),
            (
                "RUN <<'EOF' <<\"B\"",
                vec![m("EOF", false, false), m("B", false, false)],
            ),
            ("RUN cat 3<<E2 > f", vec![m("E2", false, true)]),
            ("RUN a<<EOF", vec![]),
            ("RUN echo '<<EOF'", vec![]),
            ("RUN echo 'open <<EOF", vec![]),
            ("RUN <<", vec![]),
            // Quotes and escapes around `<<` hide it from the marker pattern.
            ("RUN echo \"<<EOF\"", vec![]),
            ("RUN echo \\<<EOF", vec![]),
            ("RUN echo \"a b\" <<EOF", vec![m("EOF", false, true)]),
            (
                "RUN cat <<\"EOF\" <<-'B'",
                vec![m("EOF", false, false), m("B", true, false)],
            ),
            // Any quoted part of the delimiter stops expansion; an escape does not.
            ("RUN cat <<E\"O\"F", vec![m("EOF", false, false)]),
            ("RUN cat <<\\EOF", vec![m("EOF", false, true)]),
            ("RUN cat <<'a b'", vec![m("a b", false, false)]),
            ("RUN cat <<a\\ b", vec![m("a b", false, true)]),
            ("RUN cat <<\"\\$X\"", vec![m("$X", false, false)]),
            // Unset variables stay as written, in the line and in the delimiter.
            ("RUN cat <<$EOF", vec![m("$EOF", false, true)]),
            ("RUN cat <<${E:-x}", vec![m("${E:-x}", false, true)]),
            // A `}` quoted inside `${...}` does not close it.
            ("RUN x ${A:-\"}\"} <<EOF", vec![m("EOF", false, true)]),
            // A delimiter that lexes to nothing is no heredoc.
            ("RUN cat <<''", vec![]),
            // Blanks after `<<` belong to the marker (BuildKit since dockerfile 1.16, "allow whitespace
            // in heredocs").
            ("RUN cat << EOF", vec![m("EOF", false, true)]),
            ("RUN <<  EOF  > foo", vec![m("EOF", false, true)]),
            ("RUN cat <<\t'EOF'", vec![m("EOF", false, false)]),
            ("RUN << -EOF", vec![m("-EOF", false, true)]),
            ("RUN 3<< EOF", vec![m("EOF", false, true)]),
            // The lexer splits after `<<-`, and `<<-` alone names nothing: BuildKit's test for
            // `RUN <<- EOF` passes only because it checks no names when none are found.
            ("RUN <<- EOF", vec![]),
            ("RUN a<< EOF", vec![]),
            ("RUN echo \"<< EOF\"", vec![]),
        ];
        for (line, want) in cases {
            assert_eq!(heredoc_markers(line).as_ref(), Ok(want), "{line}");
        }
    }

    #[test]
    fn unreadable_heredoc_delimiter_is_an_error() {
        let cases = [
            // The line lexer keeps `${X:-\"}` whole; read on its own the `"` is never closed.
            (
                "RUN cat <<${X:-\\\"}",
                "<<${X:-\"}",
                "missing closing double quote (\") for the quote opened here",
            ),
            // The kept `${X:-a b}` is split at its space, leaving `${` unclosed.
            (
                "RUN cat <<${X:-a b}",
                "<<${X:-a",
                "missing '}' to close \"${X:-a\"",
            ),
        ];
        for (line, word, message) in cases {
            assert_eq!(
                heredoc_markers(line),
                Err(BadMarker {
                    word: word.into(),
                    message: message.into(),
                }),
                "{line}"
            );
        }
    }

    #[test]
    fn go_space_byte_is_whitespace_of_the_latin1_char() {
        for b in 0..=u8::MAX {
            assert_eq!(is_go_space_byte(b), char::from(b).is_whitespace(), "{b:#x}");
        }
    }

    #[test]
    fn whitespace_split() {
        assert_eq!(split_whitespace("a \t b"), vec!["a", "b"]);
        // Other Unicode spaces are part of a word.
        assert_eq!(split_whitespace("a\u{a0}b\u{b}c"), vec!["a\u{a0}b", "c"]);
        assert_eq!(split_whitespace(""), Vec::<String>::new());
        assert_eq!(split_first_whitespace("a  b c"), ("a", Some("b c")));
    }
}
