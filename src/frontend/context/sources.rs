//! COPY/ADD source selection with BuildKit's semantics, over the entries the context walk kept.

use super::dockerignore::{SegmentGlob, clean};
use super::{BuildContext, ContextError, EntryKind};

/// What one COPY/ADD source reads from the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMatch {
    /// The source as written (after word expansion).
    pub source: String,
    /// The context paths the source names after cleaning and wildcard expansion, sorted; `.` is
    /// the context root.
    pub roots: Vec<String>,
    /// Every context path read: the roots and, for directories, everything left below them,
    /// sorted and without duplicates (the root `.` itself is not listed).
    pub paths: Vec<String>,
}

impl BuildContext {
    /// Resolves COPY/ADD sources against the context, as BuildKit does: each source is cleaned
    /// and confined to the context (`../x` is `x`, `/x` is the context's `x`, `.` is the whole
    /// context, a trailing `/` is dropped), segments with `*`, `?` or `[...]` are matched like
    /// Go's `filepath.Match` against the entries of the directory above, and a directory means
    /// everything left below it. Only entries the walk kept are considered, so excluded files
    /// are never read and a symlink is listed as itself, never followed.
    ///
    /// A source that names nothing in the context is an error naming it.
    pub fn select_sources(&self, sources: &[String]) -> Result<Vec<SourceMatch>, ContextError> {
        sources.iter().map(|s| self.select_source(s)).collect()
    }

    fn select_source(&self, source: &str) -> Result<SourceMatch, ContextError> {
        // BuildKit joins the source onto `/` before resolving it in the context root, so `..`
        // can never climb out.
        let cleaned = clean(&format!("/{source}"));
        let rel = cleaned.strip_prefix('/').unwrap_or(&cleaned);
        let roots = if rel.is_empty() {
            vec![String::new()]
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
        let mut paths = Vec::new();
        for root in &roots {
            if !root.is_empty() {
                paths.push(root.clone());
            }
            if root.is_empty() || self.is_dir(root) {
                paths.extend(self.below(root).iter().map(|e| e.path.clone()));
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

    /// The entries a cleaned relative source names: a plain path is looked up as is; from the
    /// first segment with a wildcard on, each segment is matched against the names inside the
    /// directories matched so far.
    fn resolve(&self, source: &str, rel: &str) -> Result<Vec<String>, ContextError> {
        let segments: Vec<&str> = rel.split('/').collect();
        let Some(first_wild) = segments.iter().position(|s| has_wildcards(s)) else {
            return Ok(self
                .entry(rel)
                .map(|e| e.path.clone())
                .into_iter()
                .collect());
        };
        let (literal, wild) = segments.split_at(first_wild);
        let base = literal.join("/");
        if !base.is_empty() && !self.is_dir(&base) {
            return Ok(Vec::new());
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
        Ok(current)
    }

    fn is_dir(&self, path: &str) -> bool {
        matches!(self.entry(path).map(|e| &e.kind), Some(EntryKind::Dir))
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
