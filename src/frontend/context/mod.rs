//! The build context: which files `.dockerignore` leaves in, and which of them a COPY/ADD reads.
//!
//! [`BuildContext::open`] loads the ignore file BuildKit would use and walks the context once,
//! without following symlinks and without any gitignore rules. Everything after that
//! ([`BuildContext::files`], [`BuildContext::select_sources`]) works on that list of entries:
//! COPY/ADD sources follow symlinks (as BuildKit does) only from entry to entry, with the
//! context as `/`, so a symlink can never make kiln look outside the context or at a file
//! `.dockerignore` left out.

pub mod dockerignore;
mod sources;

pub use dockerignore::{Dockerignore, DockerignoreError};
pub use sources::{ParentsSource, SourceMatch};

use crate::frontend::diagnostic::{Located, Span};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

/// A build context that cannot be read, or a COPY/ADD source it does not have.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context directory is missing or unreadable.
    #[error("cannot open build context {}", path.display())]
    Open { path: PathBuf, source: io::Error },
    /// The context path is not a directory.
    #[error("build context {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// The ignore file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    ReadIgnoreFile { path: PathBuf, source: io::Error },
    /// The ignore file is a symlink that leads out of its directory.
    #[error("{} is a symlink to {}, outside {}", path.display(), target.display(), allowed.display())]
    IgnoreFileOutside {
        path: PathBuf,
        target: PathBuf,
        allowed: PathBuf,
    },
    /// The ignore file has a bad pattern; `text` is the file as read, for the snippet.
    #[error("{}", path.display())]
    Dockerignore {
        path: PathBuf,
        text: String,
        source: Box<DockerignoreError>,
    },
    /// A directory or entry inside the context cannot be read.
    #[error("cannot read {} in the build context", path.display())]
    Walk { path: PathBuf, source: io::Error },
    /// A file name in the context is not UTF-8.
    #[error("file name {} in the build context is not valid UTF-8", path.display())]
    NonUtf8Path { path: PathBuf },
    /// A COPY/ADD source names nothing that is left in the context (Docker's wording).
    #[error(
        "COPY failed: file not found in build context or excluded by .dockerignore: stat {source_path}: file does not exist"
    )]
    SourceNotFound { source_path: String },
    /// A COPY/ADD source goes through more than 40 symlinks in the context (a loop).
    #[error(
        "COPY failed: too many levels of symbolic links resolving {source_path} in the build context (more than 40: a symlink loop?)"
    )]
    SymlinkLoop { source_path: String },
    /// A COPY/ADD source has a malformed wildcard.
    #[error("bad COPY/ADD source pattern {source_path:?}: {reason}")]
    BadSourcePattern { source_path: String, reason: String },
}

impl Located for ContextError {
    fn span(&self) -> Option<Span> {
        match self {
            Self::Dockerignore { source, .. } => source.span(),
            _ => None,
        }
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            Self::Open { .. } | Self::NotADirectory { .. } => {
                "pass an existing directory as the build context".to_string()
            }
            Self::ReadIgnoreFile { .. } => "make the ignore file readable or remove it".to_string(),
            Self::IgnoreFileOutside { .. } => {
                "replace the link with a regular file (kiln never reads outside the context)"
                    .to_string()
            }
            Self::Dockerignore { source, .. } => source.help()?,
            Self::Walk { .. } => "make every file in the build context readable".to_string(),
            Self::NonUtf8Path { .. } => {
                "rename the file, or exclude it in .dockerignore".to_string()
            }
            Self::SourceNotFound { .. } => {
                "check the path is relative to the build context and not excluded by .dockerignore"
                    .to_string()
            }
            Self::SymlinkLoop { .. } => {
                "make the symlinks on the source's way lead to a file or directory".to_string()
            }
            Self::BadSourcePattern { .. } => {
                "close every `[` with `]`, or escape a literal `[`, `*` or `?` with a backslash"
                    .to_string()
            }
        })
    }
}

/// What kind of thing a context entry is (never resolved through a symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// A symlink, listed as a link; `target` is what it points to, as stored (COPY sources
    /// follow it among the entries, never on disk).
    Symlink {
        target: PathBuf,
    },
    /// A fifo, socket or device node.
    Other,
}

/// One entry left in the context after `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextEntry {
    /// Slash-separated path relative to the context root.
    pub path: String,
    pub kind: EntryKind,
}

/// What a build context directory is, which decides how it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextKind {
    /// A local directory: its `.dockerignore` applies, and its files are root's in the image
    /// (BuildKit's client sends every file with its owner reset to 0:0).
    Directory,
    /// A tar (from standard input or a URL) unpacked into a directory. BuildKit gets both as an
    /// http context (buildx uploads a stdin tar through its upload provider) and unpacks it
    /// with its copy unpack: no `.dockerignore` applies (its `MainContext` takes a remote
    /// context as it is), and every entry keeps the owner the tar gave it.
    Unpacked,
}

/// Who owns a context's files when a COPY or ADD without `--chown` reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextOwners {
    /// Root (0:0), whoever owns them on disk ([`ContextKind::Directory`]).
    Root,
    /// Their owners on disk, which unpacking set from the tar ([`ContextKind::Unpacked`]).
    OnDisk,
}

/// A build context directory with its `.dockerignore` (if any) applied.
#[derive(Debug, Clone)]
pub struct BuildContext {
    root: PathBuf,
    owners: ContextOwners,
    ignore_file: Option<PathBuf>,
    ignore: Dockerignore,
    /// Sorted by `path` (byte order).
    entries: Vec<ContextEntry>,
    /// The paths `.dockerignore` left out (a directory left out whole is one path), sorted.
    excluded: Vec<String>,
}

/// `context_dir` made canonical; it must be a directory.
fn canonical_dir(context_dir: &Path) -> Result<PathBuf, ContextError> {
    let root = context_dir
        .canonicalize()
        .map_err(|source| ContextError::Open {
            path: context_dir.to_path_buf(),
            source,
        })?;
    if !root.is_dir() {
        return Err(ContextError::NotADirectory {
            path: context_dir.to_path_buf(),
        });
    }
    Ok(root)
}

impl BuildContext {
    /// Opens `context_dir` for a build of the Dockerfile at `dockerfile` (`None`: a Dockerfile
    /// that is not on disk, e.g. read from standard input).
    ///
    /// The ignore file is BuildKit's choice: `<Dockerfile>.dockerignore` beside the Dockerfile
    /// (e.g. `build/app.Dockerfile.dockerignore` for `-f build/app.Dockerfile`) when it exists,
    /// else `.dockerignore` at the context root. A relative `dockerfile` is taken as given
    /// (relative to the current directory, like `docker build -f`). An ignore file that is a
    /// symlink must stay inside its own directory: it is never read from elsewhere.
    pub fn open(context_dir: &Path, dockerfile: Option<&Path>) -> Result<Self, ContextError> {
        let root = canonical_dir(context_dir)?;
        let ignore_file = ignore_file_for(&root, dockerfile)?;
        Self::walked(root, ignore_file, ContextOwners::Root)
    }

    /// Opens `context_dir`, a tar unpacked into a directory ([`ContextKind::Unpacked`]): no
    /// ignore file, every entry is in the context, and its files keep their owners.
    pub fn open_unpacked(context_dir: &Path) -> Result<Self, ContextError> {
        Self::walked(canonical_dir(context_dir)?, None, ContextOwners::OnDisk)
    }

    /// Opens `context_dir` as a context of `kind` (`dockerfile` as for [`BuildContext::open`]).
    pub fn open_as(
        kind: ContextKind,
        context_dir: &Path,
        dockerfile: Option<&Path>,
    ) -> Result<Self, ContextError> {
        match kind {
            ContextKind::Directory => Self::open(context_dir, dockerfile),
            ContextKind::Unpacked => Self::open_unpacked(context_dir),
        }
    }

    /// The context at the canonical directory `root` after the ignore file `ignore_file`.
    fn walked(
        root: PathBuf,
        ignore_file: Option<PathBuf>,
        owners: ContextOwners,
    ) -> Result<Self, ContextError> {
        let ignore = match &ignore_file {
            Some(path) => load_ignore(path)?,
            None => Dockerignore::default(),
        };
        let (entries, excluded) = walk(&root, &ignore)?;
        Ok(Self {
            root,
            owners,
            ignore_file,
            ignore,
            entries,
            excluded,
        })
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Who owns its files in the image (without `--chown`).
    pub fn owners(&self) -> ContextOwners {
        self.owners
    }

    /// The ignore file in use, if any.
    pub fn ignore_file(&self) -> Option<&Path> {
        self.ignore_file.as_deref()
    }

    /// The compiled ignore patterns.
    pub fn dockerignore(&self) -> &Dockerignore {
        &self.ignore
    }

    /// Every entry left in the context, sorted by path.
    pub fn entries(&self) -> &[ContextEntry] {
        &self.entries
    }

    /// The sorted relative paths of every file, symlink and directory left in the context.
    pub fn files(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.path.as_str()).collect()
    }

    /// The directory `dir` of the context (`""` is the root) on disk, when it holds exactly
    /// what the context holds there: nothing below it was left out by `.dockerignore`, no path
    /// on the way is a symlink, and it holds only files, directories and symlinks. Such a
    /// directory can be shown as it is (a `RUN --mount` of the context) instead of a filtered
    /// copy.
    pub fn unfiltered_dir(&self, dir: &str) -> Option<PathBuf> {
        if !dir.is_empty() && self.entry(dir).map(|e| &e.kind) != Some(&EntryKind::Dir) {
            return None;
        }
        let inside = |path: &str| {
            dir.is_empty()
                || path == dir
                || path
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        if self.excluded.iter().any(|p| inside(p)) {
            return None;
        }
        if self.below(dir).iter().any(|e| e.kind == EntryKind::Other) {
            return None;
        }
        Some(self.root.join(dir))
    }

    /// The entry at `path`, if it is in the context.
    fn entry(&self, path: &str) -> Option<&ContextEntry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// The entries strictly below the directory `dir` (`""` for the root), in order.
    fn below(&self, dir: &str) -> &[ContextEntry] {
        if dir.is_empty() {
            return &self.entries;
        }
        // Children of `d` sort between `d/` and `d0` (`0` follows `/` in ASCII).
        let from = format!("{dir}/");
        let to = format!("{dir}0");
        let start = self.entries.partition_point(|e| e.path < from);
        let end = self.entries.partition_point(|e| e.path < to);
        self.entries.get(start..end).unwrap_or_default()
    }
}

/// The ignore file BuildKit reads for this Dockerfile, if one exists: `<Dockerfile>.dockerignore`
/// beside a Dockerfile on disk, else the context's `.dockerignore`.
/// The ignore file a build of `dockerfile` in `context_dir` would use, read and parsed, without
/// walking the context (what the build checks need): `None` for an unpacked context, or when
/// there is no ignore file.
pub fn ignore_for(
    kind: ContextKind,
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<Dockerignore>, ContextError> {
    if kind == ContextKind::Unpacked {
        return Ok(None);
    }
    let root = canonical_dir(context_dir)?;
    ignore_file_for(&root, dockerfile)?
        .map(|path| load_ignore(&path))
        .transpose()
}

fn ignore_file_for(
    root: &Path,
    dockerfile: Option<&Path>,
) -> Result<Option<PathBuf>, ContextError> {
    let beside = dockerfile.and_then(|dockerfile| {
        let mut name = dockerfile.file_name()?.to_os_string();
        name.push(".dockerignore");
        Some(dockerfile.with_file_name(name))
    });
    for candidate in beside.into_iter().chain([root.join(".dockerignore")]) {
        if confined_file(&candidate)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Whether `path` is a regular file, reached without leaving its directory: a symlink is
/// followed only when it resolves inside the directory that holds it, so a context's
/// `.dockerignore -> /etc/shadow` is an error, not a way to read (and print) a host file.
fn confined_file(path: &Path) -> Result<bool, ContextError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(false);
    };
    if !meta.file_type().is_symlink() {
        return Ok(meta.is_file());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let (Ok(target), Ok(allowed)) = (path.canonicalize(), dir.canonicalize()) else {
        return Ok(false); // a dangling link is no ignore file, as for BuildKit
    };
    if !target.starts_with(&allowed) {
        return Err(ContextError::IgnoreFileOutside {
            path: path.to_path_buf(),
            target,
            allowed,
        });
    }
    Ok(target.is_file())
}

fn load_ignore(path: &Path) -> Result<Dockerignore, ContextError> {
    let bytes = std::fs::read(path).map_err(|source| ContextError::ReadIgnoreFile {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    Dockerignore::parse(&text).map_err(|source| ContextError::Dockerignore {
        path: path.to_path_buf(),
        text: text.into_owned(),
        source: Box::new(source),
    })
}

/// Walks the context without following symlinks, keeping what `.dockerignore` leaves in.
/// Excluded directories are skipped unless an exception could re-include something inside; a
/// re-included entry brings its parent directories with it, as BuildKit's transfer does.
/// Also returns the paths left out.
fn walk(
    root: &Path,
    ignore: &Dockerignore,
) -> Result<(Vec<ContextEntry>, Vec<String>), ContextError> {
    let mut kept = Vec::new();
    let mut excluded_paths = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel_dir)) = stack.pop() {
        let walk_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContextError::Walk { path, source }
        };
        for item in std::fs::read_dir(&dir).map_err(walk_err(&dir))? {
            let item = item.map_err(walk_err(&dir))?;
            let abs = item.path();
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(ContextError::NonUtf8Path { path: abs });
            };
            let rel = if rel_dir.is_empty() {
                name.to_string()
            } else {
                format!("{rel_dir}/{name}")
            };
            // `DirEntry::file_type` does not follow symlinks.
            let file_type = item.file_type().map_err(walk_err(&abs))?;
            let excluded = ignore.is_excluded(&rel);
            if excluded {
                excluded_paths.push(rel.clone());
            }
            let kind = if file_type.is_dir() {
                // `excluded` is already known: only the exception check of `can_skip_dir` is left.
                if excluded && !ignore.exception_may_reach_below(&rel) {
                    continue;
                }
                stack.push((abs, rel.clone()));
                EntryKind::Dir
            } else if file_type.is_symlink() {
                EntryKind::Symlink {
                    target: std::fs::read_link(&abs).map_err(walk_err(&abs))?,
                }
            } else if file_type.is_file() {
                EntryKind::File
            } else {
                EntryKind::Other
            };
            if !excluded {
                kept.push(ContextEntry { path: rel, kind });
            }
        }
    }
    let mut present: HashSet<String> = kept.iter().map(|e| e.path.clone()).collect();
    let mut parents = Vec::new();
    for entry in &kept {
        let mut path = entry.path.as_str();
        while let Some(at) = path.rfind('/') {
            path = &path[..at];
            if !present.insert(path.to_string()) {
                break;
            }
            parents.push(ContextEntry {
                path: path.to_string(),
                kind: EntryKind::Dir,
            });
        }
    }
    kept.extend(parents);
    kept.sort_by(|a, b| a.path.cmp(&b.path));
    excluded_paths.sort();
    Ok((kept, excluded_paths))
}
