//! Word expansion with BuildKit's semantics (`frontend/dockerfile/shell/lex.go`).
//!
//! A word is read left to right: `'...'` is taken literally, `"..."` keeps everything but `$`
//! expansions and the escapes `\"`, `\$`, `\\`, a bare escape character (`\`, or `` ` `` under
//! `# escape=`) takes the next character literally, and `$NAME`, `${NAME}` and
//! `${NAME<modifier>word}` are replaced by their values. The words of a modifier are expanded
//! eagerly, before the variable is looked at, exactly as BuildKit does (so `${A:-$B}` looks `B`
//! up even when `A` is set, and `${A:-${B:?}}` fails when `B` is unset).
//!
//! Supported modifiers: `-`, `:-`, `+`, `:+`, `?`, `:?`, `#`, `##`, `%`, `%%`, `/`, `//`
//! (patterns: see [`pattern`]). Anything else (`:=`, `${V:#x}`, ...) is an error, as are a
//! missing `}`, `${}`, and quotes that are not closed.

mod pattern;

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use pattern::{BOM, PatternError, Star};

/// How many `${...}` may be nested in one another before expansion gives up. Real Dockerfiles
/// nest two or three; the bound keeps hostile input from exhausting the stack.
pub const MAX_NESTING: usize = 100;

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

/// Ordered `(name, value)` pairs, as for the slice.
impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.as_slice().lookup(name)
    }
}

/// A reference to an environment is one, so `&slice` can be passed as `&dyn Env`.
impl<T: Env + ?Sized> Env for &T {
    fn lookup(&self, name: &str) -> Option<String> {
        (**self).lookup(name)
    }
}

/// A word that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    pub message: String,
    /// Byte offset in the word where the problem is: the opening quote of an unclosed quote,
    /// the `$` of a faulty `${...}`, or the modifier BuildKit does not support.
    pub offset: usize,
}

impl ExpandError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            offset,
        }
    }
}

/// The result of expanding one word, with the variables it referenced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The word with variables substituted and quotes and escapes removed, not split.
    pub value: String,
    /// The same split on unquoted whitespace (BuildKit's `ProcessWords`).
    pub words: Vec<String>,
    /// Every variable name the expansion looked up, set or not (positional and special
    /// parameters such as `1` or `@` included, as BuildKit reports them).
    pub used: BTreeSet<String>,
    /// The names in `used` that were not set (BuildKit's `Unmatched`).
    pub unset: BTreeSet<String>,
}

impl Expansion {
    /// The names in `used` that were set (BuildKit's `Matched`).
    pub fn set_names(&self) -> impl Iterator<Item = &str> {
        self.used.difference(&self.unset).map(String::as_str)
    }
}

/// Expands words the way BuildKit's `shell.Lex` does.
#[derive(Debug, Clone)]
pub struct Lexer {
    /// The escape character: `\` by default, `` ` `` under `# escape=`` ` ``.
    pub escape: char,
    /// Keep the quote characters in the output (BuildKit's `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape characters in the output, still taking the next character literally
    /// (BuildKit's `RawEscapes`).
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters (BuildKit's `SkipProcessQuotes`).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as they are written, `$V` or `${V...}`, instead
    /// of substituting (BuildKit's `SkipUnsetEnv`).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with the given escape character and all of BuildKit's options off.
    pub fn new(escape: char) -> Self {
        Self {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Sets [`Lexer::raw_quotes`].
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Sets [`Lexer::raw_escapes`].
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Sets [`Lexer::skip_process_quotes`].
    pub fn with_skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Sets [`Lexer::skip_unset_env`].
    pub fn with_skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Expands one word: variables substituted, quotes and escapes removed, no splitting.
    pub fn expand_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        self.expand_word_tracked(word, env).map(|e| e.value)
    }

    /// Expands and splits into words on unquoted whitespace (whitespace that comes from an
    /// unquoted variable splits too; quoted or escaped whitespace does not).
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.expand_word_tracked(word, env).map(|e| e.words)
    }

    /// Expands one word and reports which variables it looked up and which of them were unset
    /// (BuildKit's `ProcessWordWithMatches`).
    pub fn expand_word_tracked(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let mut expander = Expander {
            lexer: self,
            env,
            word,
            pos: if word.starts_with(BOM) {
                BOM.len_utf8()
            } else {
                0
            },
            raw_escapes: self.raw_escapes,
            depth: 0,
            used: BTreeSet::new(),
            unset: BTreeSet::new(),
        };
        let scanned = expander.scan(None, self.raw_escapes)?;
        Ok(Expansion {
            value: scanned.value,
            words: scanned.words,
            used: expander.used,
            unset: expander.unset,
        })
    }
}

/// Go's `unicode.IsLetter` (general category L), which variable names are made of.
fn is_go_letter(c: char) -> bool {
    static LETTER: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r"^\p{L}$").ok());
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    let mut buf = [0; 4];
    LETTER
        .as_ref()
        .is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// Go's `unicode.IsDigit` (general category Nd).
fn is_go_digit(c: char) -> bool {
    static DIGIT: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r"^\p{Nd}$").ok());
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let mut buf = [0; 4];
    DIGIT
        .as_ref()
        .is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// The one-character special parameters of POSIX sh (`$@`, `$#`, ...); never set in a
/// Dockerfile, but read as names so `$@x` is `x`.
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

/// Shows the start of a `${...}` in an error message, shortened if long.
fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or(text)),
        None => text.to_string(),
    }
}

/// Builds the words of `ProcessWords`: characters from unquoted text and from variables split
/// on whitespace, quoted and escaped characters never do.
#[derive(Default)]
struct Splitter {
    current: String,
    words: Vec<String>,
}

impl Splitter {
    fn push_splitting(&mut self, c: char) {
        if c.is_whitespace() {
            if !self.current.is_empty() {
                self.words.push(std::mem::take(&mut self.current));
            }
        } else {
            self.current.push(c);
        }
    }

    fn push_str_splitting(&mut self, s: &str) {
        s.chars().for_each(|c| self.push_splitting(c));
    }

    fn push_literal(&mut self, c: char) {
        self.current.push(c);
    }

    fn push_str_literal(&mut self, s: &str) {
        self.current.push_str(s);
    }

    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.words.push(self.current);
        }
        self.words
    }
}

/// What [`Expander::scan`] read.
struct Scanned {
    value: String,
    words: Vec<String>,
    /// Whether the stop character was found (always true without one).
    closed: bool,
}

/// The state of one expansion: a cursor over the word plus what it has looked up.
struct Expander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    word: &'a str,
    /// Byte offset of the next character; always on a character boundary.
    pos: usize,
    /// Raw escapes for the part being read: the modifier words of `#`, `%` and `/` keep them.
    raw_escapes: bool,
    /// How many `${` enclose the cursor.
    depth: usize,
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
}

impl Expander<'_> {
    fn peek(&self) -> Option<char> {
        self.word.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let value = self.env.lookup(name);
        self.used.insert(name.to_string());
        if value.is_none() {
            self.unset.insert(name.to_string());
        }
        value
    }

    /// Reads up to `stop` (consumed) or the end of the word, with raw escapes set to
    /// `raw_escapes` for this part only.
    fn scan(&mut self, stop: Option<char>, raw_escapes: bool) -> Result<Scanned, ExpandError> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let scanned = self.scan_inner(stop);
        self.raw_escapes = saved;
        scanned
    }

    fn scan_inner(&mut self, stop: Option<char>) -> Result<Scanned, ExpandError> {
        let mut value = String::new();
        let mut words = Splitter::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.bump();
                return Ok(Scanned {
                    value,
                    words: words.finish(),
                    closed: true,
                });
            }
            let quotes = !self.lexer.skip_process_quotes;
            match c {
                '$' => {
                    let expanded = self.dollar()?;
                    words.push_str_splitting(&expanded);
                    value.push_str(&expanded);
                }
                '\'' if quotes => {
                    let quoted = self.single_quoted()?;
                    words.push_str_literal(&quoted);
                    value.push_str(&quoted);
                }
                '"' if quotes => {
                    let quoted = self.double_quoted()?;
                    words.push_str_literal(&quoted);
                    value.push_str(&quoted);
                }
                _ => {
                    self.bump();
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            words.push_literal(c);
                            value.push(c);
                        }
                        // An escape at the very end escapes nothing and is dropped.
                        let Some(escaped) = self.bump() else {
                            break;
                        };
                        words.push_literal(escaped);
                        value.push(escaped);
                    } else {
                        words.push_splitting(c);
                        value.push(c);
                    }
                }
            }
        }
        Ok(Scanned {
            value,
            words: words.finish(),
            closed: stop.is_none(),
        })
    }

    /// `'...'`: everything literal up to the next `'`; nothing can escape it.
    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let open = self.pos;
        self.bump();
        let mut out = String::new();
        if self.lexer.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.bump() {
                None => {
                    return Err(ExpandError::new(
                        open,
                        "missing closing single quote (') for the quote opened here",
                    ));
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// `"..."`: `$` expands; the escape character escapes only `"`, `$` and itself and is kept
    /// before anything else.
    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let open = self.pos;
        self.bump();
        let mut out = String::new();
        if self.lexer.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return Err(ExpandError::new(
                        open,
                        "missing closing double quote (\") for the quote opened here",
                    ));
                }
                Some('"') => {
                    self.bump();
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let expanded = self.dollar()?;
                    out.push_str(&expanded);
                }
                Some(c) => {
                    self.bump();
                    let mut literal = c;
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // A trailing escape is dropped; the loop then reports the quote.
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                self.bump();
                                literal = next;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(literal);
                }
            }
        }
    }

    /// A name after `$` or `${`: a run of digits (positional), one special parameter character,
    /// or letters, digits and `_`. Empty when none of those follows.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && is_go_digit(c) {
                while let Some(d) = self.peek().filter(|&d| is_go_digit(d)) {
                    self.bump();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(c) {
                self.bump();
                name.push(c);
                return name;
            }
            if !(is_go_letter(c) || is_go_digit(c) || c == '_') {
                break;
            }
            self.bump();
            name.push(c);
        }
        name
    }

    /// Expands the `$...` at the cursor.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        let start = self.pos;
        self.bump();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.bump();
        match self.peek() {
            None => return Err(self.missing_brace(start)),
            Some(c @ ('{' | '}' | ':')) => {
                return Err(ExpandError::new(
                    start,
                    format!(
                        "bad substitution \"{}\": expected a variable name after \"${{\", found '{c}'",
                        excerpt(self.word.get(start..).unwrap_or_default())
                    ),
                ));
            }
            Some(_) => {}
        }
        if self.depth >= MAX_NESTING {
            return Err(ExpandError::new(
                start,
                format!("variable expansions nested more than {MAX_NESTING} levels deep"),
            ));
        }
        self.depth += 1;
        let expanded = self.braced(start);
        self.depth -= 1;
        expanded
    }

    fn missing_brace(&self, start: usize) -> ExpandError {
        ExpandError::new(
            start,
            format!(
                "missing '}}' to close \"{}\"",
                excerpt(self.word.get(start..).unwrap_or_default())
            ),
        )
    }

    fn unsupported(&self, start: usize, at: usize, modifier: &str) -> ExpandError {
        let text = self.word.get(start..self.pos).unwrap_or_default();
        ExpandError::new(
            at,
            format!(
                "unsupported modifier \"{modifier}\" in \"{}\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
                excerpt(text)
            ),
        )
    }

    /// Expands `${...}` after the `{`; `start` is the offset of the `$`.
    fn braced(&mut self, start: usize) -> Result<String, ExpandError> {
        let name = self.name();
        let modifier_at = self.pos;
        let Some(first) = self.bump() else {
            return Err(self.missing_brace(start));
        };
        match first {
            '}' => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                let (null_is_unset, op) = if first == ':' {
                    match self.bump() {
                        Some(op) => (true, op),
                        None => return Err(self.missing_brace(start)),
                    }
                } else {
                    (false, first)
                };
                let spelled = if null_is_unset {
                    format!(":{op}")
                } else {
                    op.to_string()
                };
                let trims = op == '#' || op == '%';
                if null_is_unset && trims {
                    return Err(self.unsupported(start, modifier_at, &spelled));
                }
                let scanned = self.scan(Some('}'), trims)?;
                if !scanned.closed {
                    return Err(self.missing_brace(start));
                }
                let word = scanned.value;
                let value = self.lookup(&name);
                if self.lexer.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{spelled}{word}}}"));
                }
                let empty_or_unset = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match op {
                    '-' => Ok(if empty_or_unset {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty_or_unset { String::new() } else { word }),
                    '?' => match value {
                        Some(value) if !empty_or_unset => Ok(value),
                        unset_or_empty => {
                            let message = if !word.is_empty() {
                                word
                            } else if unset_or_empty.is_none() {
                                "is not allowed to be unset".to_string()
                            } else {
                                "is not allowed to be empty".to_string()
                            };
                            Err(ExpandError::new(start, format!("{name}: {message}")))
                        }
                    },
                    '#' | '%' => {
                        // `##` / `%%` take the longest match; the first character of the word
                        // decides, after quotes are removed, as in BuildKit.
                        let (pattern, star) = match word.strip_prefix(op) {
                            Some(rest) => (rest, Star::Longest),
                            None => (word.as_str(), Star::Shortest),
                        };
                        let value = value.unwrap_or_default();
                        let trimmed = if op == '#' {
                            pattern::trim_prefix(&value, pattern, star)
                        } else {
                            pattern::trim_suffix(&value, pattern, star)
                        };
                        trimmed.map_err(|e| self.bad_pattern(start, pattern, e))
                    }
                    _ => Err(self.unsupported(start, modifier_at, &spelled)),
                }
            }
            '/' => {
                let all = self.peek() == Some('/');
                if all {
                    self.bump();
                }
                let pattern = self.scan(Some('/'), true)?;
                if !pattern.closed {
                    return Err(ExpandError::new(
                        start,
                        format!(
                            "missing '/' after the pattern in \"{}\"",
                            excerpt(self.word.get(start..).unwrap_or_default())
                        ),
                    ));
                }
                let replacement = self.scan(Some('}'), true)?;
                if !replacement.closed {
                    return Err(self.missing_brace(start));
                }
                let value = self.lookup(&name);
                if self.lexer.skip_unset_env && value.is_none() {
                    return Ok(format!(
                        "${{{name}/{}/{}}}",
                        pattern.value, replacement.value
                    ));
                }
                pattern::replace(
                    &value.unwrap_or_default(),
                    &pattern.value,
                    &replacement.value,
                    all,
                )
                .map_err(|e| self.bad_pattern(start, &pattern.value, e))
            }
            other => Err(self.unsupported(start, modifier_at, &other.to_string())),
        }
    }

    fn bad_pattern(&self, start: usize, pattern: &str, error: PatternError) -> ExpandError {
        ExpandError::new(
            start,
            format!(
                "invalid pattern \"{}\" in substitution: {error}",
                excerpt(pattern)
            ),
        )
    }
}
