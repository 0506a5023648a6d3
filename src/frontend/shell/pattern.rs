//! Shell patterns in `${V#p}`, `${V%p}` and `${V/p/r}`, matched the way BuildKit does it.
//!
//! BuildKit turns the pattern into a Go regular expression: `*` is `.*` (or `.*?` for the
//! shortest match), `?` is `.`, `\*`, `\?` and `\\` are literals, `\}` and `\/` are `}` and `/`,
//! any other `\x` is an error, and everything else (brackets included: BuildKit has no `[...]`
//! classes) is literal. We build the same expression for the `regex` crate, whose leftmost-first
//! semantics, "`.` does not match a newline" rule and linear-time guarantee are those of Go's
//! `regexp`, so hostile patterns such as a thousand `*` cannot blow up.

use regex::{Regex, RegexBuilder};

/// Go's `text/scanner` drops a byte-order mark at the start of its input; BuildKit reads both the
/// word and the pattern through one, so both lose a leading BOM.
pub(super) const BOM: char = '\u{feff}';

/// Upper bound on the compiled size of one pattern, far above any real pattern; beyond it the
/// pattern is rejected instead of eating memory.
const COMPILED_SIZE_LIMIT: usize = 64 << 20;

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum PatternError {
    /// `\` followed by something other than `*`, `?`, `\`, `}` or `/`.
    #[error("invalid escape \"\\{0}\" (only \\*, \\?, \\\\, \\}} and \\/ are allowed)")]
    InvalidEscape(char),
    /// `\` at the end of the pattern.
    #[error("the pattern ends with a lone \"\\\"")]
    TrailingEscape,
    /// The pattern compiles to more than [`COMPILED_SIZE_LIMIT`].
    #[error("the pattern is too large")]
    TooLarge,
}

/// How `*` behaves: as few characters as possible, or as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Star {
    Shortest,
    Longest,
}

/// Compiles `pattern`; `anchored` ties the match to the start of the value.
fn compile(pattern: &str, star: Star, anchored: bool) -> Result<Regex, PatternError> {
    let mut chars = pattern
        .strip_prefix(BOM)
        .unwrap_or(pattern)
        .chars()
        .peekable();
    let mut expr = String::with_capacity(pattern.len() + 8);
    if anchored {
        expr.push('^');
    }
    let star_expr = match star {
        Star::Shortest => ".*?",
        Star::Longest => ".*",
    };
    // Consecutive stars match exactly what one star matches (with the same preference), so they
    // are folded into one to keep `****...` cheap.
    let mut after_star = false;
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if !after_star {
                    expr.push_str(star_expr);
                }
                after_star = true;
                continue;
            }
            '?' => expr.push('.'),
            '\\' => match chars.peek() {
                // `}` and `/` had to be escaped to get into the pattern; the escape is not part
                // of it, the character itself is read as a literal on the next turn.
                Some('}' | '/') => continue,
                Some(&next @ ('*' | '?' | '\\')) => {
                    chars.next();
                    push_literal(&mut expr, next);
                }
                Some(&other) => return Err(PatternError::InvalidEscape(other)),
                None => return Err(PatternError::TrailingEscape),
            },
            _ => push_literal(&mut expr, c),
        }
        after_star = false;
    }
    RegexBuilder::new(&expr)
        .size_limit(COMPILED_SIZE_LIMIT)
        .dfa_size_limit(COMPILED_SIZE_LIMIT)
        .build()
        .map_err(|_| PatternError::TooLarge)
}

fn push_literal(expr: &mut String, c: char) {
    let mut buf = [0; 4];
    expr.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// `${V#p}` (`Star::Shortest`) and `${V##p}` (`Star::Longest`): `value` without the prefix the
/// pattern matches, or `value` unchanged when it matches none.
pub(super) fn trim_prefix(value: &str, pattern: &str, star: Star) -> Result<String, PatternError> {
    let re = compile(pattern, star, true)?;
    Ok(match re.find(value) {
        Some(m) => value.get(m.end()..).unwrap_or_default().to_string(),
        None => value.to_string(),
    })
}

/// `${V%p}` and `${V%%p}`. Like BuildKit, the pattern and the value are reversed and the
/// prefix is trimmed, since a leftmost regex search cannot find the shortest suffix.
pub(super) fn trim_suffix(value: &str, pattern: &str, star: Star) -> Result<String, PatternError> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reversed, &reverse_pattern(pattern), star)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern keeping each `\x` pair in order (`a\*c` → `c\*a`). A `\` that ends the
/// pattern has nothing to pair with and moves to the front, as in BuildKit (so `*\` becomes the
/// valid `\*`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut units: Vec<&[char]> = Vec::with_capacity(chars.len());
    let mut rest = chars.as_slice();
    while !rest.is_empty() {
        let take = if rest.len() > 1 && rest.first() == Some(&'\\') {
            2
        } else {
            1
        };
        let (unit, tail) = rest.split_at(take);
        units.push(unit);
        rest = tail;
    }
    units.iter().rev().flat_map(|unit| unit.iter()).collect()
}

/// `${V/p/r}` (first match) and `${V//p/r}` (every match), the leftmost and longest match first.
///
/// Replacing every match goes through Go's `Regexp.ReplaceAllString`, so there (and only there)
/// `$0` / `${0}` in the replacement stand for the matched text, `$$` for `$`, and any other
/// `$name` for nothing; an empty match right after another match is not replaced.
pub(super) fn replace(
    value: &str,
    pattern: &str,
    replacement: &str,
    all: bool,
) -> Result<String, PatternError> {
    let re = compile(pattern, Star::Longest, false)?;
    if !all {
        return Ok(match re.find(value) {
            Some(m) => {
                let mut out = String::with_capacity(value.len() + replacement.len());
                out.push_str(value.get(..m.start()).unwrap_or_default());
                out.push_str(replacement);
                out.push_str(value.get(m.end()..).unwrap_or_default());
                out
            }
            None => value.to_string(),
        });
    }
    let mut out = String::with_capacity(value.len());
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some(m) = re.find_at(value, search) else {
            break;
        };
        out.push_str(value.get(last_end..m.start()).unwrap_or_default());
        if m.end() > last_end || m.start() == 0 {
            expand_template(replacement, m.as_str(), &mut out);
        }
        last_end = m.end();
        // Always move forward by at least one character.
        let width = value
            .get(search..)
            .and_then(|rest| rest.chars().next())
            .map_or(0, char::len_utf8);
        search = if search + width > m.end() {
            search + width
        } else if search + 1 > m.end() {
            search + 1
        } else {
            m.end()
        };
    }
    out.push_str(value.get(last_end..).unwrap_or_default());
    Ok(out)
}

/// Go's `Regexp.Expand` for an expression without capture groups: `$$` is `$`, `$0` and `${0}`
/// the whole match, any other well-formed `$name` / `${name}` nothing, and a malformed `$` itself.
fn expand_template(template: &str, whole: &str, out: &mut String) {
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(rest.get(..dollar).unwrap_or_default());
        rest = rest.get(dollar + 1..).unwrap_or_default();
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        match template_name(rest) {
            Some((name, after)) => {
                if is_group_zero(name) {
                    out.push_str(whole);
                }
                rest = after;
            }
            None => out.push('$'),
        }
    }
    out.push_str(rest);
}

/// The name after a `$` in a Go replacement template and the text after it, or `None` when the
/// reference is malformed (no name, or `${` without `}`).
fn template_name(text: &str) -> Option<(&str, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let len: usize = body
        .chars()
        .take_while(|&c| super::is_go_letter(c) || super::is_go_digit(c) || c == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let (name, after) = body.split_at(len);
    if braced {
        after.strip_prefix('}').map(|after| (name, after))
    } else {
        Some((name, after))
    }
}

/// Whether a template name refers to group 0 (Go reads `0` as a number, `00` as a name).
fn is_group_zero(name: &str) -> bool {
    name == "0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_pattern_keeps_escape_pairs() {
        for (pattern, reversed) in [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            ("\\\\b", "b\\\\"),
        ] {
            assert_eq!(reverse_pattern(pattern), reversed, "{pattern:?}");
        }
    }

    #[test]
    fn invalid_escapes_are_errors() {
        let cases = [
            ("\\", "the pattern ends with a lone \"\\\""),
            (
                "\\x",
                "invalid escape \"\\x\" (only \\*, \\?, \\\\, \\} and \\/ are allowed)",
            ),
            ("\\\\\\", "the pattern ends with a lone \"\\\""),
        ];
        for (pattern, message) in cases {
            let error = compile(pattern, Star::Longest, true).err();
            assert_eq!(
                error.map(|e| e.to_string()).as_deref(),
                Some(message),
                "{pattern:?}"
            );
        }
        for pattern in ["*", "?", "\\*", "(()[]{\\}^$.\\*\\?|\\\\", "\\/"] {
            assert!(compile(pattern, Star::Longest, true).is_ok(), "{pattern:?}");
        }
    }

    #[test]
    fn replacement_template_follows_go_expand() {
        let cases = [
            ("x", "x"),
            ("[$0]", "[ab]"),
            ("[${0}]", "[ab]"),
            ("$$", "$"),
            ("$1", ""),
            ("$name-", "-"),
            ("${name", "${name"),
            ("$", "$"),
            ("$00", ""),
            ("a$-b", "a$-b"),
        ];
        for (template, expected) in cases {
            let mut out = String::new();
            expand_template(template, "ab", &mut out);
            assert_eq!(out, expected, "{template:?}");
        }
    }
}
