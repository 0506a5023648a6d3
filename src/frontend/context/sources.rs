//! COPY/ADD source selection with BuildKit's semantics, over the entries the context walk kept.
//!
//! Symlinks are followed the way BuildKit follows them in a transferred context: the client adds
//! the targets of the links on a source's way to the files it sends (fsutil `FollowLinks`), and
//! the copy resolves the source in that context as if it were `/` (fsutil `rootPath`, i.e.
//! `fs.RootPath`): an absolute target is taken from the context root, `..` stops at it, and a
//! target the context does not have is "not found" (checked with buildctl v0.32: `link -> sub`,
//! `-> /sub` and `-> ../sub` all copy `sub`; a link to a host path, even one into the context,
//! does not). Links are followed in the list of entries the walk kept, never on disk, so a link
//! cannot reach a host file or a file `.dockerignore` left out.

use super::dockerignore::{Dockerignore, SegmentGlob, clean};
use super::{BuildContext, ContextError, EntryKind};
use std::collections::VecDeque;

/// How many symbolic links one source may go through (Linux's MAXSYMLINKS, path_resolution(7)).
const MAX_SYMLINKS: usize = 40;

/// Where a context path leads once its symlinks are followed.
#[derive(Debug, Default)]
struct Followed {
    /// The entry reached, a path without symlinks in it (`""` for the root); `None` when the path
    /// leads to nothing left in the context.
    target: Option<String>,
    /// The symlinks followed on the way, in order (context paths).
    links: Vec<String>,
}

/// What one COPY/ADD source reads from the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// The source as written (after word expansion).
    pub source: String,
    /// The context paths the source names after cleaning and wildcard expansion, sorted; `.` is
    /// the context root. A path as written may go through symlinks (`link/foo`); wildcard
    /// matches are paths in the directory the part before the wildcard leads to.
    pub roots: Vec<String>,
    /// Every context path read, each a path without symlinks on its way: the roots and, for
    /// directories, everything left below them; for a root that is or goes through a symlink,
    /// the links followed and what they lead to (with everything below it). Sorted and without
    /// duplicates (the root `.` itself is not listed).
    pub paths: Vec<String>,
}

impl BuildContext {
    /// Resolves COPY/ADD sources against the context, as BuildKit does: each source is cleaned
    /// and confined to the context (`../x` is `x`, `/x` is the context's `x`, `.` is the whole
    /// context, a trailing `/` is dropped), segments with `*`, `?` or `[...]` are matched like
    /// Go's `filepath.Match` against the entries of the directory above, and a directory means
    /// everything left below it. Only entries the walk kept are considered, so excluded files
    /// are never read. Symlinks on a source's way and a source that is a symlink are followed
    /// inside the context (see the module docs); wildcard segments match names without
    /// descending through links, as fsutil's `ResolveWildcards` walks without following them.
    ///
    /// A source that names nothing in the context is an error naming it.
    pub fn select_sources(&self, sources: &[String]) -> Result<Vec<SourceMatch>, ContextError> {
        sources.iter().map(|s| self.select_source(s)).collect()
    }

    /// [`BuildContext::select_sources`] for `COPY --parents`: each source is split at its pivot
    /// ([`ParentsSource`]), the root selected as a plain source, and only the paths below it that
    /// the include pattern keeps (or that may lead to such a path) are read. A source without
    /// wildcards must name something (BuildKit's `RequiredPaths`).
    pub fn select_parents_sources(
        &self,
        sources: &[String],
    ) -> Result<Vec<SourceMatch>, ContextError> {
        sources
            .iter()
            .map(|source| {
                let parents = ParentsSource::new(source);
                let include =
                    parents
                        .include()
                        .map_err(|error| ContextError::BadSourcePattern {
                            source_path: source.clone(),
                            reason: error.to_string(),
                        })?;
                let mut selected = self.select_source(&parents.root)?;
                let roots: Vec<String> = selected
                    .roots
                    .iter()
                    .map(|r| if r == "." { String::new() } else { r.clone() })
                    .collect();
                // The directories the roots lead to (through symlinks or not): what lies below
                // one of them is filtered by the pattern, the rest (the links followed) is kept.
                let dirs: Vec<String> = roots
                    .iter()
                    .filter_map(|r| match self.entry(r) {
                        Some(e) if !matches!(e.kind, EntryKind::Symlink { .. }) => Some(r.clone()),
                        None if r.is_empty() => Some(String::new()),
                        _ => self.follow(source, r).ok().and_then(|f| f.target),
                    })
                    .collect();
                // What the copy may read below a root: what the pattern keeps, and the
                // directories on the way to it (made with their attributes); a directory the
                // pattern might reach below but does not is left out.
                let mut kept: Vec<(String, bool)> = Vec::new();
                for path in std::mem::take(&mut selected.paths) {
                    let below = dirs.iter().find_map(|dir| {
                        if dir.is_empty() {
                            Some(path.as_str())
                        } else {
                            path.strip_prefix(dir.as_str())?.strip_prefix('/')
                        }
                    });
                    match below {
                        None => kept.push((path, true)),
                        Some(rel) if include.is_excluded(rel) => kept.push((path, true)),
                        Some(rel) if self.is_dir(&path) && include.may_match_below(rel) => {
                            kept.push((path, false));
                        }
                        Some(_) => {}
                    }
                }
                selected.paths = kept
                    .iter()
                    .filter(|(path, sure)| {
                        *sure
                            || kept.iter().any(|(p, sure)| {
                                *sure
                                    && p.strip_prefix(path.as_str())
                                        .is_some_and(|r| r.starts_with('/'))
                            })
                    })
                    .map(|(path, _)| path.clone())
                    .collect();
                if parents.required() && !self.parents_found(&dirs, &parents.pattern) {
                    return Err(ContextError::SourceNotFound {
                        source_path: source.clone(),
                    });
                }
                selected.source = source.clone();
                Ok(selected)
            })
            .collect()
    }

    /// Whether `pattern` (without wildcards) names an entry below one of `dirs`.
    fn parents_found(&self, dirs: &[String], pattern: &str) -> bool {
        dirs.iter().any(|dir| {
            let path = if dir.is_empty() {
                pattern.to_string()
            } else {
                format!("{dir}/{pattern}")
            };
            pattern.is_empty()
                || self.entry(&path).is_some()
                || self.follow(&path, &path).is_ok_and(|f| f.target.is_some())
        })
    }

    fn select_source(&self, source: &str) -> Result<SourceMatch, ContextError> {
        // BuildKit joins the source onto `/` before resolving it in the context root, so `..`
        // can never climb out.
        let cleaned = clean(&format!("/{source}"));
        let rel = cleaned.strip_prefix('/').unwrap_or(&cleaned);
        let (roots, mut paths) = if rel.is_empty() {
            (vec![String::new()], Vec::new())
        } else {
            self.resolve(source, rel)?
        };
        // BuildKit copies with AllowEmptyWildcard: a wildcard that matches nothing copies
        // nothing; a plain path that is not there is an error.
        if roots.is_empty() && !has_wildcards(rel) {
            return Err(ContextError::SourceNotFound {
                source_path: source.to_string(),
            });
        }
        for root in &roots {
            match self.entry(root) {
                // The common case, and the only one in a context without symlinks: a path with
                // no link on its way, read as it is.
                Some(entry) if !matches!(entry.kind, EntryKind::Symlink { .. }) => {
                    self.read(root, &mut paths);
                }
                None if root.is_empty() => self.read(root, &mut paths),
                // A symlink, or a path through one: the copy reads where it leads. A wildcard
                // match that leads nowhere adds only its links; the copy reports it.
                _ => {
                    let followed = self.follow(source, root)?;
                    paths.extend(followed.links);
                    if let Some(target) = followed.target {
                        self.read(&target, &mut paths);
                    }
                }
            }
        }
        paths.sort();
        paths.dedup();
        let roots = roots
            .into_iter()
            .map(|r| if r.is_empty() { ".".to_string() } else { r })
            .collect();
        Ok(SourceMatch {
            source: source.to_string(),
            roots,
            paths,
        })
    }

    /// Adds `path` (an entry without symlinks on its way, `""` for the root) and, for a
    /// directory, everything left below it, to `paths`.
    fn read(&self, path: &str, paths: &mut Vec<String>) {
        if !path.is_empty() {
            paths.push(path.to_string());
        }
        if path.is_empty() || self.is_dir(path) {
            paths.extend(self.below(path).iter().map(|e| e.path.clone()));
        }
    }

    /// Follows the symlinks of the cleaned relative `path` (the last component's too) in the
    /// context as if it were `/`: an absolute target starts again at the context root and `..`
    /// never climbs above it (fsutil `rootPath`). Only the walk's entries are looked at, so a
    /// link to a file `.dockerignore` left out, or to anything outside, leads nowhere.
    fn follow(&self, source: &str, path: &str) -> Result<Followed, ContextError> {
        let mut pending: VecDeque<&str> = components(path).collect();
        let mut resolved: Vec<&str> = Vec::new();
        let mut links = Vec::new();
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(name);
            let here = resolved.join("/");
            match self.entry(&here).map(|e| &e.kind) {
                None => {
                    return Ok(Followed {
                        target: None,
                        links,
                    });
                }
                Some(EntryKind::Symlink { target }) => {
                    if links.len() == MAX_SYMLINKS {
                        return Err(ContextError::SymlinkLoop {
                            source_path: source.to_string(),
                        });
                    }
                    links.push(here);
                    resolved.pop();
                    // Every entry is UTF-8 (the walk refuses other names): a target that is not
                    // names nothing in the context.
                    let Some(target) = target.to_str() else {
                        return Ok(Followed {
                            target: None,
                            links,
                        });
                    };
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    for component in components(target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(component);
                    }
                }
                Some(EntryKind::Dir) => {}
                // A file where a directory is needed: the path names nothing.
                Some(_) if !pending.is_empty() => {
                    return Ok(Followed {
                        target: None,
                        links,
                    });
                }
                Some(_) => {}
            }
        }
        Ok(Followed {
            target: Some(resolved.join("/")),
            links,
        })
    }

    /// The entries a cleaned relative source names, and the symlinks followed to find them: a
    /// plain path is kept as written when it leads to an entry (through symlinks or not); from
    /// the first segment with a wildcard on, each segment is matched against the names inside
    /// the directories matched so far, starting from the directory the literal part before it
    /// leads to (fsutil `ResolveWildcards`: matches are paths in that directory).
    fn resolve(&self, source: &str, rel: &str) -> Result<(Vec<String>, Vec<String>), ContextError> {
        let segments: Vec<&str> = rel.split('/').collect();
        let Some(first_wild) = segments.iter().position(|s| has_wildcards(s)) else {
            let found = match self.entry(rel) {
                Some(entry) if !matches!(entry.kind, EntryKind::Symlink { .. }) => true,
                _ => self.follow(source, rel)?.target.is_some(),
            };
            let roots = if found {
                vec![rel.to_string()]
            } else {
                Vec::new()
            };
            return Ok((roots, Vec::new()));
        };
        let (literal, wild) = segments.split_at(first_wild);
        let mut base = literal.join("/");
        let mut links = Vec::new();
        if !base.is_empty() && !self.is_dir(&base) {
            let followed = self.follow(source, &base)?;
            match followed.target {
                Some(target) if target.is_empty() || self.is_dir(&target) => {
                    base = target;
                    links = followed.links;
                }
                // Leads nowhere, or to a file: nothing matches, nothing is read.
                _ => return Ok((Vec::new(), Vec::new())),
            }
        }
        let mut current = vec![base];
        for (i, segment) in wild.iter().enumerate() {
            let glob =
                SegmentGlob::new(segment).map_err(|reason| ContextError::BadSourcePattern {
                    source_path: source.to_string(),
                    reason,
                })?;
            let last = i + 1 == wild.len();
            let mut next = Vec::new();
            for dir in &current {
                let prefix_len = if dir.is_empty() { 0 } else { dir.len() + 1 };
                for entry in self.below(dir) {
                    let name = entry.path.get(prefix_len..).unwrap_or_default();
                    if name.contains('/') || !glob.matches(name) {
                        continue;
                    }
                    // Only directories can hold the next segment; symlinks are not followed.
                    if last || entry.kind == EntryKind::Dir {
                        next.push(entry.path.clone());
                    }
                }
            }
            current = next;
        }
        current.sort();
        Ok((current, links))
    }

    fn is_dir(&self, path: &str) -> bool {
        matches!(self.entry(path).map(|e| &e.kind), Some(EntryKind::Dir))
    }
}

/// A `COPY --parents` source split as BuildKit's `dispatchCopy` splits it: at the first `/./`
/// (rsync's `--relative` pivot) into the directory copied from and the include pattern below it
/// (`./src/./pkg/a.go` is `./src` and `pkg/a.go`, so only `pkg/` is kept in the destination);
/// without a pivot the root is `/` and the whole source is the pattern (`x/a.txt` keeps `x/`).
/// The pattern is a patternmatcher pattern: `**` matches any number of directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentsSource {
    /// The directory copied from (its contents, filtered by `pattern`), as written.
    pub root: String,
    /// The include pattern, cleaned and relative to `root` (empty for everything).
    pub pattern: String,
}

impl ParentsSource {
    /// Splits `source` at its pivot.
    pub fn new(source: &str) -> ParentsSource {
        let (root, pattern) = match source.split_once("/./") {
            Some((root, pattern)) => (root, pattern),
            None => ("/", source),
        };
        let pattern = clean(&format!("/{pattern}"));
        ParentsSource {
            root: root.to_string(),
            pattern: pattern.trim_start_matches('/').to_string(),
        }
    }

    /// Whether the source must name something: it has no wildcards (BuildKit's `RequiredPaths`).
    pub fn required(&self) -> bool {
        !has_wildcards(&self.root) && !has_wildcards(&self.pattern)
    }

    /// The include pattern compiled; an empty pattern includes everything.
    pub fn include(&self) -> Result<Dockerignore, super::DockerignoreError> {
        if self.pattern.is_empty() {
            return Dockerignore::from_patterns(&["**"]);
        }
        Dockerignore::from_patterns(&[self.pattern.as_str()])
    }
}

/// BuildKit's `containsWildcards`: an unescaped `*`, `?` or `[`.
fn has_wildcards(segment: &str) -> bool {
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

/// The components of a `/`-separated path, without empty and `.` components.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

#[cfg(test)]
mod tests {
    use super::ParentsSource;

    #[test]
    fn parents_sources_split_at_the_first_pivot() {
        let split = |source: &str| {
            let p = ParentsSource::new(source);
            let required = p.required();
            (p.root, p.pattern, required)
        };
        let owned =
            |root: &str, pattern: &str, required| (root.to_string(), pattern.to_string(), required);
        assert_eq!(split("./x/a.txt"), owned("/", "x/a.txt", true));
        assert_eq!(split("./src/./pkg/a.go"), owned("./src", "pkg/a.go", true));
        assert_eq!(split("/app/./sub/*.txt"), owned("/app", "sub/*.txt", false));
        assert_eq!(split("a/./b/./c"), owned("a", "b/c", true));
        assert_eq!(split("x/./"), owned("x", "", true));
        assert_eq!(split("../../x/**/*.txt"), owned("/", "x/**/*.txt", false));
        assert_eq!(split("*/./a"), owned("*", "a", false));
    }
}
