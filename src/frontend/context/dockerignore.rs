//! `.dockerignore` patterns with Docker's semantics (moby/patternmatcher + BuildKit's reader),
//! which are not gitignore's:
//!
//! - every pattern is anchored at the context root and cleaned like Go's `filepath.Clean`; a
//!   leading `/` is dropped, so `/foo` and `foo` are the same pattern;
//! - `*` and `?` never cross `/`; `**` matches any number of directories; `[...]` classes and `\`
//!   escapes follow Go's `filepath.Match`;
//! - `!pattern` re-includes; the last pattern that matches a path wins;
//! - a pattern that matches a parent directory matches everything below it
//!   (`MatchesOrParentMatches`).
//!
//! Why not globset: Docker's matcher is not a glob dialect globset has. It turns `**` into
//! `(.*/)?` even in the middle of a segment (`a**/b` matches `a/x/b` but not `axb`), treats a
//! pattern made of `**` plus literal text as a plain suffix test (`**file` matches `dirfile`),
//! has no `{a,b}` alternation, negates classes with `^` only, and rejects patterns Go's
//! `filepath.Match` rejects. So each pattern is compiled once, at parse time, into one of Docker's
//! four match kinds (exact, prefix, suffix, token program); matching a path then costs one
//! string comparison or one pass of a small bit-set NFA over the path, with no allocation for
//! ordinary patterns, and the parent directories are checked in that same pass.

use crate::frontend::diagnostic::{Located, Span};

/// A `.dockerignore` pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerignoreError {
    /// The pattern is not valid `filepath.Match` syntax (or Docker could never match it).
    #[error("bad .dockerignore pattern {pattern:?} on line {line}: {reason}")]
    BadPattern {
        /// The pattern as written on its line (trimmed).
        pattern: String,
        line: usize,
        reason: String,
        span: Span,
    },
    /// A line that is only `!`: an exception with nothing to re-include.
    #[error("illegal exclusion pattern \"!\" on line {line}")]
    LoneExclamation { line: usize, span: Span },
}

impl Located for DockerignoreError {
    fn span(&self) -> Option<Span> {
        match self {
            Self::BadPattern { span, .. } | Self::LoneExclamation { span, .. } => Some(*span),
        }
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            Self::BadPattern { .. } => {
                "escape a literal `[`, `*`, `?` or `\\` with a backslash, and close every `[` with `]`"
                    .to_string()
            }
            Self::LoneExclamation { .. } => {
                "write the path to re-include after the `!`, e.g. `!keep.txt`".to_string()
            }
        })
    }
}

/// A compiled `.dockerignore`: the patterns in file order, ready to match paths.
#[derive(Debug, Clone, Default)]
pub struct Dockerignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exclusion: bool,
    matcher: Matcher,
}

/// Docker's four match kinds (patternmatcher `matchType`). They are not interchangeable: a
/// suffix pattern such as `**file` matches `dirfile`, which its token form `(.*/)?file` would not.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Program(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `*`: any run of characters other than `/`.
    Star,
    /// A trailing `**` after wildcards: anything at all.
    AnyString,
    /// `**` before more pattern: empty, or anything ending in `/`.
    DirStar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Dockerignore {
    /// Reads a `.dockerignore` file the way BuildKit does: a UTF-8 BOM is dropped, lines that
    /// start with `#` (in column 1) are comments, other lines are trimmed and blank ones skipped;
    /// `!` marks an exception; each pattern is cleaned like `filepath.Clean` and a leading `/` is
    /// dropped. Errors name the pattern and its line.
    pub fn parse(text: &str) -> Result<Self, DockerignoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if raw.starts_with('#') {
                continue;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let column = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;
            let span = Span::on_line(line, column, trimmed.chars().count());
            let (exclusion, body) = match trimmed.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, trimmed),
            };
            let mut normalized = if body.is_empty() {
                String::new()
            } else {
                let cleaned = clean(body);
                match cleaned.strip_prefix('/') {
                    Some(rest) if !rest.is_empty() => rest.to_string(),
                    _ => cleaned,
                }
            };
            if exclusion {
                normalized.insert(0, '!');
            }
            if let Some(pattern) = Pattern::new(&normalized, trimmed, line, span)? {
                patterns.push(pattern);
            }
        }
        Ok(Self { patterns })
    }

    /// Compiles patterns given directly, like patternmatcher's `New`: each is trimmed, cleaned,
    /// and may start with `!`, but a leading `/` is kept (use [`Dockerignore::parse`] for file
    /// text). Errors report the pattern's 1-based index as its line.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<Self, DockerignoreError> {
        let mut compiled = Vec::new();
        for (index, pattern) in patterns.iter().enumerate() {
            let text = pattern.as_ref();
            let span = Span::on_line(index + 1, 1, text.chars().count());
            if let Some(pattern) = Pattern::new(text, text.trim(), index + 1, span)? {
                compiled.push(pattern);
            }
        }
        Ok(Self { patterns: compiled })
    }

    /// True when there are no patterns (nothing is excluded).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns in the form BuildKit hands to the matcher: cleaned, exceptions as `!path`.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether `rel_path` (slash-separated, relative to the context root) is left out of the
    /// context: the last pattern that matches it or one of its parent directories decides.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let mut excluded = false;
        let simple = is_simple_path(rel_path);
        // Go's parent list (`filepath.Dir` split on `/`) only needs building for odd paths; a
        // clean relative path's parents are its prefixes up to each `/`, checked in one pass.
        let parents = if simple {
            Vec::new()
        } else {
            go_parent_dirs(rel_path)
        };
        for pattern in &self.patterns {
            // An include cannot change an excluded path and an exception cannot change an
            // included one, so skip the work (same shortcut as patternmatcher).
            if pattern.exclusion != excluded {
                continue;
            }
            let hit = if simple {
                pattern.matcher.matches(rel_path, true)
            } else {
                pattern.matcher.matches(rel_path, false)
                    || parents.iter().any(|p| pattern.matcher.matches(p, false))
            };
            if hit {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// Whether a walk may skip everything below the directory `rel_dir`: it is excluded and no
    /// `!` exception could match anything inside it. Docker descends into excluded directories
    /// when an exception might re-include a child; this answer errs on the side of descending.
    pub fn can_skip_dir(&self, rel_dir: &str) -> bool {
        self.is_excluded(rel_dir) && !self.exception_may_reach_below(rel_dir)
    }

    /// Whether some pattern that is not an exception could match a path below the directory
    /// `rel_dir` (errs on the side of yes): used for include patterns (`COPY --parents`), to know
    /// whether a directory they do not match is worth entering.
    pub fn may_match_below(&self, rel_dir: &str) -> bool {
        let below = format!("{rel_dir}/");
        self.patterns
            .iter()
            .any(|p| !p.exclusion && p.matcher.could_match_below(&below))
    }

    /// Whether some `!` exception could match a path below the directory `rel_dir` (errs on the
    /// side of yes). A walk that already knows the directory is excluded asks only this.
    pub fn exception_may_reach_below(&self, rel_dir: &str) -> bool {
        let below = format!("{rel_dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && p.matcher.could_match_below(&below))
    }
}

impl Pattern {
    /// Compiles one pattern with patternmatcher `New` rules; `None` for a blank one. `shown` and
    /// `span` are what an error reports.
    fn new(
        text: &str,
        shown: &str,
        line: usize,
        span: Span,
    ) -> Result<Option<Self>, DockerignoreError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let cleaned = clean(text);
        let (exclusion, body) = match cleaned.strip_prefix('!') {
            Some("") => return Err(DockerignoreError::LoneExclamation { line, span }),
            Some(rest) => (true, rest),
            None => (false, cleaned.as_str()),
        };
        let matcher = compile(body).map_err(|reason| DockerignoreError::BadPattern {
            pattern: shown.to_string(),
            line,
            reason,
            span,
        })?;
        Ok(Some(Self {
            text: body.to_string(),
            exclusion,
            matcher,
        }))
    }
}

/// The match kind patternmatcher's `compile` would pick, tracked while tokenizing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Program,
}

/// Compiles a cleaned pattern (without `!`), following patternmatcher's `compile` for the match
/// kind and Go's `filepath.Match` for syntax. Where Docker's regexp translation gives a pattern a
/// meaning `filepath.Match` does not (`*` inside `[...]`, `[[:alpha:]]`, `\d`), kiln keeps the
/// `filepath.Match` meaning, which is what Docker documents. A range such as `[z-a]` is an error:
/// `filepath.Match` accepts it but Docker's regexp compile rejects it, so Docker fails the build.
fn compile(pattern: &str) -> Result<Matcher, String> {
    let (tokens, kind) = tokenize(pattern, true)?;
    Ok(match kind {
        Kind::Exact => Matcher::Exact(pattern.to_string()),
        // Both kinds are only chosen when the pattern starts or ends with the ASCII `**`.
        Kind::Prefix => Matcher::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).to_string()),
        Kind::Suffix => Matcher::Suffix(pattern.strip_prefix("**").unwrap_or(pattern).to_string()),
        Kind::Program => Matcher::Program(tokens),
    })
}

/// Tokenizes a pattern. With `double_star`, `**` has Docker's meaning and the match kind is
/// tracked; without it every `*` is `filepath.Match`'s star (for COPY source segments).
fn tokenize(pattern: &str, double_star: bool) -> Result<(Vec<Token>, Kind), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut kind = Kind::Exact;
    let mut i = 0;
    let mut first = true;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '*' if double_star && chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        tokens.push(Token::AnyString);
                        kind = Kind::Program;
                    }
                } else {
                    tokens.push(Token::DirStar);
                    kind = Kind::Program;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                tokens.push(Token::Star);
                kind = Kind::Program;
            }
            '?' => {
                tokens.push(Token::AnyChar);
                kind = Kind::Program;
            }
            '\\' => match chars.get(i) {
                Some(&escaped) => {
                    i += 1;
                    tokens.push(Token::Literal(escaped));
                    kind = Kind::Program;
                }
                None => return Err("trailing backslash escapes nothing".to_string()),
            },
            '[' => {
                let (token, next) = parse_class(&chars, i)?;
                tokens.push(token);
                i = next;
                kind = Kind::Program;
            }
            ']' => {
                tokens.push(Token::Literal(']'));
                kind = Kind::Program;
            }
            other => tokens.push(Token::Literal(other)),
        }
        first = false;
    }
    Ok((tokens, kind))
}

/// A `filepath.Match` pattern for one path segment (a COPY/ADD source wildcard), compiled once.
#[derive(Debug, Clone)]
pub(crate) struct SegmentGlob(Vec<Token>);

impl SegmentGlob {
    /// Compiles `pattern`; the error says what is malformed.
    pub(crate) fn new(pattern: &str) -> Result<Self, String> {
        tokenize(pattern, false).map(|(tokens, _)| Self(tokens))
    }

    /// Whether the whole `name` matches.
    pub(crate) fn matches(&self, name: &str) -> bool {
        run(&self.0, name, false).matched
    }
}

/// Parses a `[...]` class whose `[` is just before `start`, with `filepath.Match`'s rules: an
/// optional `^`, then ranges `a` or `a-b` (each end may be `\`-escaped; a bare `-` or `]` is an
/// error), closed by `]` after at least one range. Returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        if chars.get(i) == Some(&']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, i + 1));
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (end, next) = class_char(chars, i + 1)?;
            hi = end;
            i = next;
        }
        if lo > hi {
            return Err(format!("character class range {lo}-{hi} is backwards"));
        }
        ranges.push((lo, hi));
    }
}

/// One end of a class range (Go's `getEsc`): the character and the index after it.
fn class_char(chars: &[char], mut i: usize) -> Result<(char, usize), String> {
    let unclosed = || "unclosed character class `[`".to_string();
    let c = match chars.get(i) {
        None => return Err(unclosed()),
        Some('-') => return Err("`-` must be escaped or between two characters in `[...]`".into()),
        Some(']') => return Err("empty character class `[]`".to_string()),
        Some('\\') => {
            i += 1;
            *chars.get(i).ok_or_else(unclosed)?
        }
        Some(&c) => c,
    };
    i += 1;
    if i >= chars.len() {
        return Err(unclosed());
    }
    Ok((c, i))
}

/// Result of running a token program over some input.
struct Run {
    /// The whole input matched, or (when asked) a prefix ending just before a `/` did.
    matched: bool,
    /// Some continuation of the input could still match.
    alive: bool,
}

impl Matcher {
    /// Whether the matcher matches `path`, or, with `parents`, any prefix of it that ends just
    /// before a `/` (its parent directories, for a clean relative path).
    fn matches(&self, path: &str, parents: bool) -> bool {
        let prefixes = || {
            path.char_indices()
                .filter(|&(_, c)| c == '/')
                .map(|(at, _)| &path[..at])
        };
        match self {
            Self::Exact(text) => {
                path == text
                    || (parents
                        && path.len() > text.len()
                        && path.starts_with(text.as_str())
                        && path.as_bytes().get(text.len()) == Some(&b'/'))
            }
            Self::Prefix(text) => {
                let hit = |p: &str| p.starts_with(text.as_str());
                hit(path) || (parents && prefixes().any(hit))
            }
            Self::Suffix(suffix) => {
                let hit = |p: &str| {
                    p.ends_with(suffix.as_str())
                        || suffix.strip_prefix('/').is_some_and(|rest| p == rest)
                };
                hit(path) || (parents && prefixes().any(hit))
            }
            Self::Program(tokens) => run(tokens, path, parents).matched,
        }
    }

    /// Whether some path starting with `dir_slash` (a directory followed by `/`) could match.
    fn could_match_below(&self, dir_slash: &str) -> bool {
        match self {
            Self::Exact(text) => text.starts_with(dir_slash),
            Self::Prefix(text) => {
                text.starts_with(dir_slash) || dir_slash.starts_with(text.as_str())
            }
            Self::Suffix(_) => true,
            Self::Program(tokens) => run(tokens, dir_slash, false).alive,
        }
    }
}

/// Runs a token program as an NFA over `input`. State `i` means "next, match token `i`"; state
/// `n` accepts. A second set tracks being inside a `DirStar`'s `.*`, which may only leave
/// through a `/`. Sets live on the stack for programs up to 255 tokens.
fn run(tokens: &[Token], input: &str, parents: bool) -> Run {
    let words = (tokens.len() + 1).div_ceil(64);
    if words <= 4 {
        let mut buf = [0u64; 16];
        run_with(tokens, input, parents, &mut buf[..words * 4])
    } else {
        let mut buf = vec![0u64; words * 4];
        run_with(tokens, input, parents, &mut buf)
    }
}

fn run_with(tokens: &[Token], input: &str, parents: bool, buf: &mut [u64]) -> Run {
    let n = tokens.len();
    let words = buf.len() / 4;
    let (cur, next) = buf.split_at_mut(words * 2);
    let (mut at, mut inside) = cur.split_at_mut(words);
    let (mut next_at, mut next_inside) = next.split_at_mut(words);
    set(at, 0);
    close(tokens, at);
    for c in input.chars() {
        if parents && c == '/' && get(at, n) {
            return Run {
                matched: true,
                alive: true,
            };
        }
        next_at.fill(0);
        next_inside.fill(0);
        for i in ones(at) {
            let Some(token) = tokens.get(i) else { continue };
            match token {
                Token::Literal(l) if *l == c => set(next_at, i + 1),
                Token::AnyChar if c != '/' => set(next_at, i + 1),
                Token::Star if c != '/' => set(next_at, i),
                Token::AnyString => set(next_at, i),
                Token::DirStar => {
                    set(next_inside, i);
                    if c == '/' {
                        set(next_at, i + 1);
                    }
                }
                Token::Class { negated, ranges }
                    if ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated =>
                {
                    set(next_at, i + 1)
                }
                _ => {}
            }
        }
        for i in ones(inside) {
            set(next_inside, i);
            if c == '/' {
                set(next_at, i + 1);
            }
        }
        close(tokens, next_at);
        std::mem::swap(&mut at, &mut next_at);
        std::mem::swap(&mut inside, &mut next_inside);
        if at.iter().chain(inside.iter()).all(|&w| w == 0) {
            return Run {
                matched: false,
                alive: false,
            };
        }
    }
    Run {
        matched: get(at, n),
        alive: true,
    }
}

/// Adds the states reachable without reading input: tokens that may match nothing are skipped.
/// Skips only go forward, so one pass in order is enough.
fn close(tokens: &[Token], at: &mut [u64]) {
    for (i, token) in tokens.iter().enumerate() {
        if get(at, i) && matches!(token, Token::Star | Token::AnyString | Token::DirStar) {
            set(at, i + 1);
        }
    }
}

fn get(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set(bits: &mut [u64], i: usize) {
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

/// The indices of the set bits, in increasing order.
fn ones(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(wi, &w)| {
        let mut rest = w;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            Some(wi * 64 + bit)
        })
    })
}

/// Whether a path's parent directories are exactly its prefixes up to each `/`, as Go's
/// `filepath.Dir` would list them: relative, no empty, `.` or `..` segments (a single trailing
/// `/` is fine).
fn is_simple_path(path: &str) -> bool {
    if path.starts_with('/') {
        return false;
    }
    let body = path.strip_suffix('/').unwrap_or(path);
    !body
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
}

/// The parent directories patternmatcher checks: `filepath.Dir(path)` split on `/`, each prefix
/// of that list joined back (none when the parent is `.`).
fn go_parent_dirs(path: &str) -> Vec<String> {
    let dir = match path.rfind('/') {
        Some(at) => clean(&path[..=at]),
        None => return Vec::new(),
    };
    if dir == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = dir.split('/').collect();
    (1..=parts.len()).map(|k| parts[..k].join("/")).collect()
}

/// Go's `filepath.Clean` for `/`-separated paths: repeated slashes collapsed, `.` segments
/// removed, `..` resolved lexically (kept at the front of a relative path, dropped at the root),
/// no trailing slash, and `.` for an empty result.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|last| *last != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A fuzzing entry point: parses arbitrary bytes as a `.dockerignore` and matches paths built
/// from the same bytes, checking that nothing panics and that [`Dockerignore::can_skip_dir`]
/// never skips a directory holding a path [`Dockerignore::is_excluded`] would keep. It panics
/// by design, so it exists only in tests and fuzz builds (cargo-fuzz sets `--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub fn fuzz_parse_and_match(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(ignore) = Dockerignore::parse(&text) else {
        return;
    };
    let mut paths: Vec<String> = ["a", "a/b", "a/b/c.txt", ".git/config", "x y/z", "/", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    paths.extend(
        text.lines()
            .take(8)
            .map(|l| l.trim().trim_start_matches('!').to_string()),
    );
    for path in &paths {
        let _ = ignore.is_excluded(path);
        let path = path.trim_matches('/');
        if !is_simple_path(path) || path.is_empty() {
            continue;
        }
        let mut prefix = String::new();
        for seg in path.split('/') {
            if !prefix.is_empty() && ignore.can_skip_dir(&prefix) {
                assert!(
                    ignore.is_excluded(path),
                    "can_skip_dir({prefix:?}) but {path:?} is kept"
                );
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("/", "/"),
            ("a//b/./c/", "a/b/c"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../x", "/x"),
            ("./", "."),
            ("**/", "**"),
        ] {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn compile_picks_dockers_match_kind() {
        let kind = |p: &str| match compile(p) {
            Ok(Matcher::Exact(_)) => "exact",
            Ok(Matcher::Prefix(_)) => "prefix",
            Ok(Matcher::Suffix(_)) => "suffix",
            Ok(Matcher::Program(_)) => "program",
            Err(_) => "error",
        };
        for (pattern, want) in [
            ("a.b", "exact"),
            ("dir/**", "prefix"),
            ("**", "suffix"),
            ("**file", "suffix"),
            ("**/file*", "program"),
            ("**]", "program"),
            ("a**b", "program"),
            ("[z-a]", "error"),
        ] {
            assert_eq!(kind(pattern), want, "{pattern}");
        }
    }

    #[test]
    fn long_programs_use_the_heap_path() {
        let pattern = format!("{}*", "?".repeat(300));
        let ignore = Dockerignore::from_patterns(&[pattern]).unwrap();
        assert!(ignore.is_excluded(&"x".repeat(305)));
        assert!(!ignore.is_excluded(&"x".repeat(299)));
    }

    #[test]
    fn fuzz_entry_survives_odd_input() {
        for data in [
            &b"**\n!a/b\n[\n"[..],
            b"\xff\xfe!\n",
            b"a**/b\n!**/c\n",
            b"#\n!\n",
        ] {
            fuzz_parse_and_match(data);
        }
    }
}
