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
        Ok(self.run(word, env, false, None)?.value)
    }

    /// Expands and splits into words on unquoted whitespace (whitespace that comes from an
    /// unquoted variable splits too; quoted or escaped whitespace does not).
    pub fn expand_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        Ok(self.run(word, env, true, None)?.words)
    }

    /// Expands one word and reports which variables it looked up and which of them were unset
    /// (BuildKit's `ProcessWordWithMatches`).
    pub fn expand_word_tracked(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let mut names = Names::default();
        let scanned = self.run(word, env, true, Some(&mut names))?;
        Ok(Expansion {
            value: scanned.value,
            words: scanned.words,
            used: names.used,
            unset: names.unset,
        })
    }

    /// [`Lexer::expand_word_tracked`], also giving the unset names it met when the word fails
    /// to expand (BuildKit's `ProcessWord` returns them with its error, and the build checks
    /// report them).
    pub fn expand_word_tracked_unset(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> (Result<Expansion, ExpandError>, BTreeSet<String>) {
        let mut names = Names::default();
        match self.run(word, env, true, Some(&mut names)) {
            Ok(scanned) => {
                let unset = names.unset.clone();
                let expansion = Expansion {
                    value: scanned.value,
                    words: scanned.words,
                    used: names.used,
                    unset: names.unset,
                };
                (Ok(expansion), unset)
            }
            Err(err) => (Err(err), names.unset),
        }
    }

    /// Expands `word`, splitting it into words only when `split` is set and recording the
    /// names looked up only into `names`.
    fn run(
        &self,
        word: &str,
        env: &dyn Env,
        split: bool,
        names: Option<&mut Names>,
    ) -> Result<Scanned, ExpandError> {
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
            names,
        };
        expander.scan(None, self.raw_escapes, split)
    }
}

/// The variable names an expansion looked up.
#[derive(Default)]
struct Names {
    used: BTreeSet<String>,
    unset: BTreeSet<String>,
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

/// What a scan reads: the value and, when asked for, its words as `ProcessWords` splits them:
/// whitespace from unquoted text and from variables separates words, quoted and escaped
/// characters never do.
struct Output {
    value: String,
    /// `None` when the words are not wanted.
    words: Option<Words>,
}

#[derive(Default)]
struct Words {
    current: String,
    done: Vec<String>,
}

impl Output {
    fn new(split: bool) -> Self {
        Self {
            value: String::new(),
            words: split.then(Words::default),
        }
    }

    /// Appends `s`; with `splits`, its whitespace separates words.
    fn push_str(&mut self, s: &str, splits: bool) {
        self.value.push_str(s);
        let Some(words) = &mut self.words else {
            return;
        };
        if !splits {
            words.current.push_str(s);
            return;
        }
        for c in s.chars() {
            if !c.is_whitespace() {
                words.current.push(c);
            } else if !words.current.is_empty() {
                words.done.push(std::mem::take(&mut words.current));
            }
        }
    }

    fn push(&mut self, c: char, splits: bool) {
        self.push_str(c.encode_utf8(&mut [0; 4]), splits);
    }

    fn finish(self, closed: bool) -> Scanned {
        let words = match self.words {
            Some(Words { current, mut done }) => {
                if !current.is_empty() {
                    done.push(current);
                }
                done
            }
            None => Vec::new(),
        };
        Scanned {
            value: self.value,
            words,
            closed,
        }
    }
}

/// What [`Expander::scan`] read.
struct Scanned {
    value: String,
    /// The value split into words; empty when splitting was not asked for.
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
    /// Where to record the names looked up, when that is asked for.
    names: Option<&'a mut Names>,
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
        if let Some(names) = &mut self.names {
            names.used.insert(name.to_string());
            if value.is_none() {
                names.unset.insert(name.to_string());
            }
        }
        value
    }

    /// Reads up to `stop` (consumed) or the end of the word, with raw escapes set to
    /// `raw_escapes` for this part only, splitting into words when `split` is set.
    fn scan(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        split: bool,
    ) -> Result<Scanned, ExpandError> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let scanned = self.scan_inner(stop, split);
        self.raw_escapes = saved;
        scanned
    }

    fn scan_inner(&mut self, stop: Option<char>, split: bool) -> Result<Scanned, ExpandError> {
        let mut out = Output::new(split);
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.bump();
                return Ok(out.finish(true));
            }
            let quotes = !self.lexer.skip_process_quotes;
            match c {
                '$' => out.push_str(&self.dollar()?, true),
                // BuildKit's `processPossibleHeredoc`: `<<` takes the blanks after it into the
                // same word, so `<< EOF` is one word (a heredoc marker) when splitting.
                '<' if self.word[self.pos..].starts_with("<<") => {
                    let rest = &self.word[self.pos + 2..];
                    let blanks = rest.len() - rest.trim_start_matches([' ', '\t', '\r']).len();
                    let end = self.pos + 2 + blanks;
                    out.push_str(&self.word[self.pos..end], false);
                    self.pos = end;
                }
                '\'' if quotes => out.push_str(&self.single_quoted()?, false),
                '"' if quotes => out.push_str(&self.double_quoted()?, false),
                _ => {
                    self.bump();
                    if c == self.lexer.escape {
                        if self.raw_escapes {
                            out.push(c, false);
                        }
                        // An escape at the very end escapes nothing and is dropped.
                        let Some(escaped) = self.bump() else {
                            break;
                        };
                        out.push(escaped, false);
                    } else {
                        out.push(c, true);
                    }
                }
            }
        }
        Ok(out.finish(stop.is_none()))
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
                let scanned = self.scan(Some('}'), trims, false)?;
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
                let pattern = self.scan(Some('/'), true, false)?;
                if !pattern.closed {
                    return Err(ExpandError::new(
                        start,
                        format!(
                            "missing '/' after the pattern in \"{}\"",
                            excerpt(self.word.get(start..).unwrap_or_default())
                        ),
                    ));
                }
                let replacement = self.scan(Some('}'), true, false)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `S` set, `E` set but empty, `U` unset.
    fn modifier_env() -> Vec<(String, String)> {
        env(&[("S", "val"), ("E", ""), ("V", "xxyy")])
    }

    /// `Ok(value)` or `Err(message)`.
    fn expand(lexer: &Lexer, word: &str, env: &dyn Env) -> Result<String, String> {
        lexer.expand_word(word, env).map_err(|e| e.message)
    }

    #[test]
    fn every_modifier_on_set_empty_and_unset() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("$S|$E|$U", Ok("val||")),
            ("${S}|${E}|${U}", Ok("val||")),
            ("${S-d}|${E-d}|${U-d}", Ok("val||d")),
            ("${S:-d}|${E:-d}|${U:-d}", Ok("val|d|d")),
            ("${S+a}|${E+a}|${U+a}", Ok("a|a|")),
            ("${S:+a}|${E:+a}|${U:+a}", Ok("a||")),
            ("${S?m}|${E?m}", Ok("val|")),
            ("${U?m}", Err("U: m")),
            ("${U?}", Err("U: is not allowed to be unset")),
            ("${S:?m}", Ok("val")),
            ("${E:?m}", Err("E: m")),
            ("${E:?}", Err("E: is not allowed to be empty")),
            ("${U:?}", Err("U: is not allowed to be unset")),
            ("${U:?need $S}", Err("U: need val")),
            ("${V#x}|${V##x*}|${V#*y}|${V##*y}", Ok("xyy||y|")),
            ("${V%y}|${V%%y*}|${V%x*}|${V%%x*}", Ok("xxy|xx|x|")),
            ("${V#z}|${V%z}|${E#x}|${U%x}", Ok("xxyy|xxyy||")),
            ("${V#?x}|${V%y?}|${V#}|${V%%}", Ok("yy|xx|xxyy|xxyy")),
            (
                "${V/x/-}|${V//x/-}|${V/z/-}|${U/x/-}",
                Ok("-xyy|--yy|xxyy|"),
            ),
            (
                "${V/x*/-}|${V//?/.}|${V/y}",
                Err("missing '/' after the pattern in \"${V/y}\""),
            ),
            ("${V/x*/-}|${V//?/.}", Ok("-|....")),
            // BuildKit has no bracket expressions: `[` and `]` are literal.
            ("${V#[x]}", Ok("xxyy")),
            (
                "${V:=d}",
                Err(
                    "unsupported modifier \":=\" in \"${V:=d}\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
                ),
            ),
            (
                "${V:#x}",
                Err(
                    "unsupported modifier \":#\" in \"${V:#\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
                ),
            ),
            (
                "${V:%x}",
                Err(
                    "unsupported modifier \":%\" in \"${V:%\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
                ),
            ),
            (
                "${V=x}",
                Err(
                    "unsupported modifier \"=\" in \"${V=\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
                ),
            ),
            ("${U:-${E:-${S}}}", Ok("val")),
            ("${U:-a b} ${U:-\"q}\"}", Ok("a b q}")),
        ];
        let lexer = Lexer::new('\\');
        let env = modifier_env();
        let mut failures = Vec::new();
        for (word, expected) in cases {
            let got = expand(&lexer, word, &env);
            if got.as_deref().map_err(String::as_str) != *expected {
                failures.push(format!("{word:?}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// BuildKit's `TestProcessWithMatches` table: value and the names it reports as set and unset.
    #[test]
    fn tracked_names_match_buildkit() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
            (
                "x ${UNUSED}",
                &[("DUMMY", "dummy")],
                Some("x "),
                &[],
                &["UNUSED"],
            ),
            ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx  ccc"),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx bbb ccc"),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:-}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("xxx"),
                &["FOO"],
                &[],
            ),
            ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("aaa bbb "),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                &[("FOO", "xxx"), ("BAR", "")],
                Some("aaa  "),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            ("${FOO?aaa}", &[("FOO", "xxx")], Some("xxx"), &["FOO"], &[]),
            ("${BAR?bbb}", &[("BAR", "")], Some(""), &["BAR"], &[]),
            ("${BAZ?ccc}", &[("FOO", "xxx")], None, &[], &[]),
            ("${FOO:?aaa}", &[("FOO", "xxx")], Some("xxx"), &["FOO"], &[]),
            ("${BAR:?bbb}", &[("BAR", "")], None, &[], &[]),
            ("${FOO=aaa}", &[("FOO", "xxx")], None, &[], &[]),
            ("${FOO=:aaa}", &[("FOO", "xxx")], None, &[], &[]),
            ("${FOO=}", &[], None, &[], &[]),
            (
                "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
                &[("FOO", "()[]{}^$.*?|\\x")],
                Some("x"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO%%\\**}",
                &[("FOO", "xx**")],
                Some("xx"),
                &["FOO"],
                &[],
            ),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "x")],
                Some("xyy"),
                &["FOO", "BAR"],
                &[],
            ),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
            ("${FOO#?\\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                &[("FOO", "xxyy")],
                Some(".xxyy."),
                &["FOO"],
                &["ABC"],
            ),
            (
                "${FOO%%\\**\\*}",
                &[("FOO", "a***yy*")],
                Some("a"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO%%$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO:#}", &[], None, &[], &[]),
            ("${FOO:%%}", &[], None, &[], &[]),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
                &["FOO", "NEEDLE"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
                &["FOO", "NEEDLE"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "/a/foo/b/c.txt"),
                    ("NEEDLE", "/?/"),
                    ("REPLACEMENT", "/"),
                ],
                Some("/foo/b/c.txt - /foo/c.txt"),
                &["FOO", "NEEDLE", "REPLACEMENT"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "http://google.de"),
                    ("NEEDLE", "http://"),
                    ("REPLACEMENT", "https://"),
                ],
                Some("https://google.de"),
                &["FOO", "NEEDLE", "REPLACEMENT"],
                &[],
            ),
            (
                "${FOO//\\//\\/}",
                &[("FOO", "/tmp/foo.txt")],
                Some("\\/tmp\\/foo.txt"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("wwxxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            ("${FOO///}", &[], Some(""), &[], &["FOO"]),
            // The default word is expanded even when it is not used.
            (
                "${FOO:-$BAR}",
                &[("FOO", "x")],
                Some("x"),
                &["FOO"],
                &["BAR"],
            ),
            ("$1 $@", &[], Some(" "), &[], &["1", "@"]),
            (
                "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz",
                &[
                    ("VERSION", "v1.2.3"),
                    ("TARGETOS", "linux"),
                    ("TARGETARCH", "arm64"),
                ],
                Some("something-v1.2.3.linux-arm64.tar.gz"),
                &["VERSION", "TARGETOS", "TARGETARCH"],
                &["TARGETVARIANT"],
            ),
        ];
        let lexer = Lexer::new('\\');
        let mut failures = Vec::new();
        for (word, pairs, expected, set, unset) in cases {
            let env = env(pairs);
            match (lexer.expand_word_tracked(word, &env), expected) {
                (Err(_), None) => {}
                (Ok(got), Some(expected)) => {
                    let got_set: Vec<&str> = got.set_names().collect();
                    let got_unset: Vec<&str> = got.unset.iter().map(String::as_str).collect();
                    let mut want_set = set.to_vec();
                    want_set.sort_unstable();
                    let mut want_unset = unset.to_vec();
                    want_unset.sort_unstable();
                    let used_is_union = got.used.iter().all(|n| {
                        want_set.contains(&n.as_str()) || want_unset.contains(&n.as_str())
                    }) && got.used.len() == want_set.len() + want_unset.len();
                    if got.value != *expected
                        || got_set != want_set
                        || got_unset != want_unset
                        || !used_is_union
                    {
                        failures.push(format!(
                            "{word:?}: expected {expected:?} set {want_set:?} unset {want_unset:?}, got {got:?}"
                        ));
                    }
                }
                (got, expected) => {
                    failures.push(format!("{word:?}: expected {expected:?}, got {got:?}"))
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        let env = env(&[("PWD", "/home")]);
        let cases = [
            ("he`$PWD", Ok("he$PWD")),
            ("he$PWD", Ok("he/home")),
            ("a\\b", Ok("a\\b")),
            ("\"a`\"b\"", Ok("a\"b")),
            ("\"a`$PWD\"", Ok("a$PWD")),
            ("\"a``b\"", Ok("a`b")),
            ("\"a`tb\"", Ok("a`tb")),
            ("'a`b'", Ok("a`b")),
            ("ab`", Ok("ab")),
            ("a`'b", Ok("a'b")),
            ("\"a\\\"", Ok("a\\")),
        ];
        for (word, expected) in cases {
            assert_eq!(expand(&lexer, word, &env).as_deref(), expected, "{word:?}");
        }
        assert_eq!(
            lexer.expand_words("a` b c", &env),
            Ok(vec!["a b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn raw_quotes_and_raw_escapes() {
        let env = env(&[("A", "x y")]);
        let raw_quotes = Lexer::new('\\').with_raw_quotes(true);
        let raw_escapes = Lexer::new('\\').with_raw_escapes(true);
        let both = Lexer::new('\\')
            .with_raw_quotes(true)
            .with_raw_escapes(true);
        let no_quotes = Lexer::new('\\').with_skip_process_quotes(true);
        let cases: &[(&Lexer, &str, &str)] = &[
            (&raw_quotes, "'a $A'\"b $A\"", "'a $A'\"b x y\""),
            (&raw_quotes, "a\\ b", "a b"),
            (&raw_escapes, "a\\ b\\$A", "a\\ b\\$A"),
            (&raw_escapes, "'a\\b'", "a\\b"),
            // Like BuildKit, a raw escape before a character it cannot escape inside double
            // quotes is written twice.
            (&raw_escapes, "\"\\t\\$A\"", "\\\\t\\$A"),
            (&both, "\"a\\\"b\" 'c'", "\"a\\\"b\" 'c'"),
            (&no_quotes, "'$A' \"b\"", "'x y' \"b\""),
        ];
        for (lexer, word, expected) in cases {
            assert_eq!(
                expand(lexer, word, &env).as_deref(),
                Ok(*expected),
                "{word:?}"
            );
        }
        assert_eq!(
            raw_quotes.expand_words("\"a b\" c'd e'", &env),
            Ok(vec!["\"a b\"".to_string(), "c'd e'".to_string()])
        );
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let lexer = Lexer::new('\\').with_skip_unset_env(true);
        let env = env(&[("S", "val")]);
        assert_eq!(
            expand(
                &lexer,
                "$S $U ${U} ${U:-d$S} ${U#x} ${U//a/b} ${S:+z}",
                &env
            )
            .as_deref(),
            Ok("val $U ${U} ${U:-dval} ${U#x} ${U/a/b} z")
        );
    }

    #[test]
    fn words_split_on_unquoted_whitespace_only() {
        let lexer = Lexer::new('\\');
        let env = env(&[("A", " x  y "), ("E", "")]);
        let cases: &[(&str, &[&str])] = &[
            ("a${A}b", &["a", "x", "y", "b"]),
            ("a${A:-}b\"$A\"", &["a", "x", "y", "b x  y "]),
            ("\"$A\"", &[" x  y "]),
            ("a\\ b c", &["a b", "c"]),
            ("'' \"\" $E", &[]),
            ("a'' b", &["a", "b"]),
            ("\ta\u{a0}b\u{3000}c ", &["a", "b", "c"]),
            // `<<` keeps the blanks after it (BuildKit's heredoc rule), other spaces split.
            ("cat << \t\rEOF x", &["cat", "<< \t\rEOF", "x"]),
            ("a<< b <<-\tc", &["a<< b", "<<-", "c"]),
            ("<<< b \\<< c", &["<<<", "b", "<<", "c"]),
        ];
        for (word, expected) in cases {
            let expected: Vec<String> = expected.iter().map(|w| w.to_string()).collect();
            assert_eq!(lexer.expand_words(word, &env), Ok(expected), "{word:?}");
        }
    }

    #[test]
    fn names_follow_go_unicode_classes() {
        let lexer = Lexer::new('\\');
        let env = env(&[("한국어", "k"), ("A", "a"), ("٣", "arabic three")]);
        let cases = [
            ("$한국어!", "k!"),
            // `²` is a number but not a decimal digit, so it ends the name.
            ("$A²", "a²"),
            // A name that starts with a decimal digit is all digits, in any script.
            ("$٣x", "arabic threex"),
            ("$1x ${0}y $$z", "x y z"),
            ("\u{feff}$A", "a"),
            ("$A\u{feff}", "a\u{feff}"),
        ];
        for (word, expected) in cases {
            assert_eq!(
                expand(&lexer, word, &env).as_deref(),
                Ok(expected),
                "{word:?}"
            );
        }
    }

    #[test]
    fn error_offsets_point_at_the_cause() {
        let lexer = Lexer::new('\\');
        let env = env(&[("E", "")]);
        let cases = [
            (
                "ab'cd",
                2,
                "missing closing single quote (') for the quote opened here",
            ),
            (
                "x\"y",
                1,
                "missing closing double quote (\") for the quote opened here",
            ),
            (
                "x\"y\\\"",
                1,
                "missing closing double quote (\") for the quote opened here",
            ),
            ("a${B", 1, "missing '}' to close \"${B\""),
            ("a${", 1, "missing '}' to close \"${\""),
            ("a${B:-x", 1, "missing '}' to close \"${B:-x\""),
            ("a${B:", 1, "missing '}' to close \"${B:\""),
            (
                "a${}",
                1,
                "bad substitution \"${}\": expected a variable name after \"${\", found '}'",
            ),
            (
                "${:-x}",
                0,
                "bad substitution \"${:-x}\": expected a variable name after \"${\", found ':'",
            ),
            (
                "한${E:=x}",
                6,
                "unsupported modifier \":=\" in \"${E:=x}\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
            ),
            (
                "x${.}",
                3,
                "unsupported modifier \".\" in \"${.\": use one of -, :-, +, :+, ?, :?, #, ##, %, %%, /, //",
            ),
            ("ab${X:?}", 2, "X: is not allowed to be unset"),
            ("ab${X:-${E:?}}", 7, "E: is not allowed to be empty"),
            (
                "${E:-'x}",
                5,
                "missing closing single quote (') for the quote opened here",
            ),
            ("${E/a", 0, "missing '/' after the pattern in \"${E/a\""),
            ("${E/a/b", 0, "missing '}' to close \"${E/a/b\""),
            (
                "-${E#\\x}",
                1,
                "invalid pattern \"\\x\" in substitution: invalid escape \"\\x\" (only \\*, \\?, \\\\, \\} and \\/ are allowed)",
            ),
        ];
        for (word, offset, message) in cases {
            let got = lexer.expand_word(word, &env);
            assert_eq!(
                got,
                Err(ExpandError {
                    message: message.to_string(),
                    offset
                }),
                "{word:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let lexer = Lexer::new('\\');
        let env = env(&[]);
        let closed = format!("{}x{}", "${A:-".repeat(10_000), "}".repeat(10_000));
        let err = lexer.expand_word(&closed, &env).unwrap_err();
        assert_eq!(err.offset, MAX_NESTING * 5);
        assert!(err.message.contains("nested more than 100 levels"), "{err}");
        let open = "${".repeat(10_000);
        assert!(lexer.expand_word(&open, &env).is_err());
        let quotes = format!("{}{}", "\"${A:-".repeat(10_000), "}\"".repeat(10_000));
        assert!(lexer.expand_word(&quotes, &env).is_err());
        // Exactly at the limit still works.
        let limit = format!(
            "{}x{}",
            "${A:-".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        assert_eq!(lexer.expand_word(&limit, &env).as_deref(), Ok("x"));
    }

    #[test]
    fn hostile_patterns_stay_linear() {
        let lexer = Lexer::new('\\');
        // Checked by results, not by timing: a backtracking matcher would never finish on
        // 1000 stars, so exponential behaviour shows up as a hung test.
        let value = "a".repeat(2_000) + "b";
        let env = env(&[
            ("V", &value),
            ("STARS", &"*".repeat(1000)),
            ("MIXED", &"*a".repeat(200)),
            ("BAD", "ab\\"),
        ]);
        let cases = [
            ("${V#$STARS}", Some(value.clone())),
            ("${V##$STARS}", Some(String::new())),
            ("${V%$STARS}", Some(value.clone())),
            ("${V##${MIXED}c}", Some(value.clone())),
            ("${V%%$MIXED}", Some(value.clone())),
            ("${V%%${MIXED}b}", Some(String::new())),
            ("${V//$MIXED/x}", Some("xb".to_string())),
            ("${V//?/}", Some(String::new())),
            ("${V#$BAD}", None),
        ];
        for (word, expected) in cases {
            let got = lexer.expand_word(word, &env).ok();
            assert_eq!(got, expected, "{word:?}");
        }
        let literal = format!("${{V#{}}}", "*".repeat(1000));
        assert_eq!(
            lexer.expand_word(&literal, &env).as_deref(),
            Ok(value.as_str())
        );
    }

    #[test]
    fn pattern_wildcards_do_not_cross_newlines() {
        // Go's `.` does not match `\n`, and BuildKit builds `*` from it.
        let lexer = Lexer::new('\\');
        let env = env(&[("V", "a\nb")]);
        assert_eq!(expand(&lexer, "${V##*}", &env).as_deref(), Ok("\nb"));
        assert_eq!(expand(&lexer, "${V//?/x}", &env).as_deref(), Ok("x\nx"));
    }

    #[test]
    fn replace_all_expands_go_templates() {
        let lexer = Lexer::new('\\');
        let env = env(&[("V", "abab"), ("R", "<$0>")]);
        assert_eq!(
            expand(&lexer, "${V//b/$R}", &env).as_deref(),
            Ok("a<b>a<b>")
        );
        assert_eq!(expand(&lexer, "${V/b/$R}", &env).as_deref(), Ok("a<$0>ab"));
        assert_eq!(expand(&lexer, "${V//x*/-}", &env).as_deref(), Ok("abab"));
        assert_eq!(expand(&lexer, "${V///-}", &env).as_deref(), Ok("-a-b-a-b-"));
    }

    #[test]
    fn suffix_pattern_with_trailing_backslash_reverses_like_buildkit() {
        // `*\` reversed is `\*`: BuildKit then strips a literal `*`.
        let lexer = Lexer::new('\\');
        let env = env(&[("V", "ab*"), ("P", "*\\")]);
        assert_eq!(expand(&lexer, "${V%$P}", &env).as_deref(), Ok("ab"));
        assert!(lexer.expand_word("${V#$P}", &env).is_err());
    }

    #[test]
    fn every_entry_point_expands_alike() {
        let env = env(&[("A", "x  y"), ("E", "")]);
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            ("a $A b", "a x  y b", &["a", "x", "y", "b"], &["A"]),
            ("\"$A\" 'q r'", "x  y q r", &["x  y", "q r"], &["A"]),
            ("${U:-$A}\\ z", "x  y z", &["x", "y z"], &["A", "U"]),
            ("${A/ /_}$E", "x_ y", &["x_", "y"], &["A", "E"]),
            ("", "", &[], &[]),
        ];
        for lexer in [Lexer::new('\\'), Lexer::new('\\').with_raw_quotes(true)] {
            for &(word, value, words, used) in cases {
                let tracked = lexer.expand_word_tracked(word, &env);
                let Ok(tracked) = tracked else {
                    panic!("{word}: {tracked:?}");
                };
                assert_eq!(lexer.expand_word(word, &env).as_ref(), Ok(&tracked.value));
                assert_eq!(lexer.expand_words(word, &env).as_ref(), Ok(&tracked.words));
                if !lexer.raw_quotes {
                    assert_eq!(tracked.value, value, "{word}");
                    assert_eq!(tracked.words, words, "{word}");
                }
                assert_eq!(tracked.used.iter().collect::<Vec<_>>(), used, "{word}");
            }
        }
    }
}
