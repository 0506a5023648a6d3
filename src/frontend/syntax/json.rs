//! BuildKit's `parseJSON`: the JSON form of an instruction (`RUN ["a", "b"]`), decoded the way
//! Go's `json.Unmarshal` does it: the whole rest of the line must be one JSON value (JSON
//! whitespace may follow it, anything else makes it no JSON at all, so `CMD ["a"] # x` is the
//! shell form of the whole line), and that value must be an array whose elements are all strings.

use nom::IResult;
use nom::Parser;
use nom::branch::alt;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::char;
use nom::combinator::{opt, recognize};
use nom::sequence::preceded;

/// Go's `encoding/json` refuses documents nested deeper than this.
const MAX_DEPTH: usize = 10_000;

/// What the JSON form of an argument string turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum JsonArgs {
    /// A JSON array of strings: the decoded elements.
    Strings(Vec<String>),
    /// Valid JSON array, but an element is not a string (BuildKit's hard error).
    NotStringArray,
    /// Not a JSON array: BuildKit falls back to the shell form.
    NotJson,
}

/// Decodes `rest` (leading whitespace allowed) as a JSON array of strings.
pub fn parse_json_array(rest: &str) -> JsonArgs {
    let rest = rest.trim_start_matches(char::is_whitespace);
    if !rest.starts_with('[') {
        return JsonArgs::NotJson;
    }
    // Go first checks that the whole input is well-formed, then converts it: a non-string
    // element is only an error in an array that is well-formed to its end, with nothing but
    // JSON whitespace after it.
    match scan_array(rest) {
        None => JsonArgs::NotJson,
        Some((after, _)) if !json_ws(after).is_empty() => JsonArgs::NotJson,
        Some((
            _,
            Elements {
                saw_non_string: true,
                ..
            },
        )) => JsonArgs::NotStringArray,
        Some((_, Elements { strings, .. })) => JsonArgs::Strings(strings),
    }
}

/// The elements of a well-formed top-level array.
struct Elements {
    /// The string elements, in order.
    strings: Vec<String>,
    /// Some element was not a string.
    saw_non_string: bool,
}

fn json_ws(i: &str) -> &str {
    i.trim_start_matches([' ', '\t', '\n', '\r'])
}

/// The top-level array's elements and what follows the array, or `None` when the JSON is
/// malformed.
fn scan_array(input: &str) -> Option<(&str, Elements)> {
    let mut i = json_ws(input.strip_prefix('[')?);
    let mut elements = Elements {
        strings: Vec::new(),
        saw_non_string: false,
    };
    if let Some(after) = i.strip_prefix(']') {
        return Some((after, elements));
    }
    loop {
        i = json_ws(i);
        if i.starts_with('"') {
            let (after, s) = json_string(i).ok()?;
            elements.strings.push(s);
            i = after;
        } else {
            i = skip_value(i)?;
            elements.saw_non_string = true;
        }
        i = json_ws(i);
        if let Some(after) = i.strip_prefix(',') {
            i = after;
        } else if let Some(after) = i.strip_prefix(']') {
            return Some((after, elements));
        } else {
            return None;
        }
    }
}

/// Skips one well-formed JSON value that is nested inside the top-level array (depth 1), without
/// recursion so that deep nesting cannot overflow the stack.
fn skip_value(input: &str) -> Option<&str> {
    // The stack holds the open containers: `[` or `{`.
    let mut stack: Vec<u8> = Vec::new();
    let mut i = input;
    loop {
        i = json_ws(i);
        // A value is expected here (or the end of an empty container).
        let opened = match *i.as_bytes().first()? {
            open @ (b'[' | b'{') => {
                if stack.len() + 2 > MAX_DEPTH {
                    return None;
                }
                stack.push(open);
                i = json_ws(&i[1..]);
                let close = if open == b'[' { ']' } else { '}' };
                if let Some(after) = i.strip_prefix(close) {
                    stack.pop();
                    i = after;
                    false
                } else {
                    if open == b'{' {
                        i = object_key(i)?;
                    }
                    true
                }
            }
            b'"' => {
                i = json_string(i).ok()?.0;
                false
            }
            _ => {
                i = scalar(i).ok()?.0;
                false
            }
        };
        if opened {
            continue;
        }
        // After a value: close containers or move to the next element.
        loop {
            let Some(&top) = stack.last() else {
                return Some(i);
            };
            i = json_ws(i);
            let close = if top == b'[' { ']' } else { '}' };
            if let Some(after) = i.strip_prefix(',') {
                i = if top == b'{' {
                    object_key(json_ws(after))?
                } else {
                    after
                };
                break;
            } else if let Some(after) = i.strip_prefix(close) {
                stack.pop();
                i = after;
            } else {
                return None;
            }
        }
    }
}

/// `"key" :` inside an object.
fn object_key(i: &str) -> Option<&str> {
    let (after, _) = json_string(i).ok()?;
    json_ws(after).strip_prefix(':')
}

/// A JSON number, `true`, `false` or `null`.
fn scalar(i: &str) -> IResult<&str, &str> {
    let digits = || take_while1(|c: char| c.is_ascii_digit());
    let number = recognize((
        opt(char('-')),
        alt((tag("0"), digits())),
        opt(preceded(char('.'), digits())),
        opt((
            alt((char('e'), char('E'))),
            opt(alt((char('+'), char('-')))),
            digits(),
        )),
    ));
    alt((tag("true"), tag("false"), tag("null"), number)).parse(i)
}

/// A JSON string, decoded as Go decodes it (lone surrogates become U+FFFD).
fn json_string(i: &str) -> IResult<&str, String> {
    let fail = |i| nom::Err::Error(nom::error::Error::new(i, nom::error::ErrorKind::Char));
    let (mut i, _) = char('"').parse(i)?;
    let mut out = String::new();
    loop {
        let (after, plain) = take_while(|c: char| c != '"' && c != '\\' && c >= ' ').parse(i)?;
        out.push_str(plain);
        i = after;
        let mut chars = i.chars();
        match chars.next() {
            Some('"') => return Ok((chars.as_str(), out)),
            Some('\\') => {
                let esc = chars.next().ok_or_else(|| fail(i))?;
                i = chars.as_str();
                match esc {
                    '"' | '\\' | '/' => out.push(esc),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let (after, unit) = hex4(i).ok_or_else(|| fail(i))?;
                        i = after;
                        if (0xD800..0xE000).contains(&unit) {
                            // A high surrogate followed by `\u` + low surrogate is one char.
                            let pair = i
                                .strip_prefix("\\u")
                                .and_then(hex4)
                                .filter(|&(_, lo)| unit < 0xDC00 && (0xDC00..0xE000).contains(&lo));
                            match pair {
                                Some((after, lo)) => {
                                    let c = 0x10000 + ((unit - 0xD800) << 10) + (lo - 0xDC00);
                                    out.push(char::from_u32(c).unwrap_or('\u{fffd}'));
                                    i = after;
                                }
                                None => out.push('\u{fffd}'),
                            }
                        } else {
                            out.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                        }
                    }
                    _ => return Err(fail(i)),
                }
            }
            // A control character or the end of input: malformed.
            _ => return Err(fail(i)),
        }
    }
}

fn hex4(i: &str) -> Option<(&str, u32)> {
    let digits = i.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((&i[4..], u32::from_str_radix(digits, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArgs {
        JsonArgs::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn decodes_like_go() {
        let cases: &[(&str, JsonArgs)] = &[
            (r#"["a", "b"]"#, strings(&["a", "b"])),
            (r#"  []"#, strings(&[])),
            (r#"["a"] "#, strings(&["a"])),
            ("[\"a\"]\t\r\n", strings(&["a"])),
            // Anything but JSON whitespace after the array: not JSON, even a non-string array.
            (r#"["a"] trailing"#, JsonArgs::NotJson),
            (r#"["a"]x"#, JsonArgs::NotJson),
            (r#"[]x"#, JsonArgs::NotJson),
            (r#"["a"] # comment"#, JsonArgs::NotJson),
            (r#"["a"] ["b"]"#, JsonArgs::NotJson),
            (r#"[1] x"#, JsonArgs::NotJson),
            ("[\"a\"]\u{a0}", JsonArgs::NotJson),
            (r#"["\u00e9\n\/"]"#, strings(&["é\n/"])),
            (
                r#"["\ud83d\ude00", "\ud800x"]"#,
                strings(&["😀", "\u{fffd}x"]),
            ),
            (r#"["a", ["b"]]"#, JsonArgs::NotStringArray),
            (r#"[1, {"a": [null, true]}]"#, JsonArgs::NotStringArray),
            (r#"["a", ]"#, JsonArgs::NotJson),
            // A non-string element in an array that is malformed later: not JSON at all.
            (r#"[1, 'a']"#, JsonArgs::NotJson),
            (r#"['a']"#, JsonArgs::NotJson),
            (r#"["a""#, JsonArgs::NotJson),
            (r#"[01]"#, JsonArgs::NotJson),
            ("[\"a\tb\"]", JsonArgs::NotJson),
            ("echo", JsonArgs::NotJson),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_json_array(input), want, "{input}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = format!("[1, {}{}]", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(parse_json_array(&deep), JsonArgs::NotJson);
        let ok = format!("[1, {}{}]", "[".repeat(100), "]".repeat(100));
        assert_eq!(parse_json_array(&ok), JsonArgs::NotStringArray);
    }
}
