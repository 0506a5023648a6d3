//! COPY, ADD and WORKDIR: file operations with Docker's (BuildKit's) semantics, written into the
//! empty `upper` directory of a new layer over the target's lowers (see [`target`] for how writes
//! stay inside `upper`, and [`crate::builder::steps::union`] for how the layers are read).
//!
//! The rules, checked against BuildKit (frontend/dockerfile/dockerfile2llb `dispatchCopy`,
//! solver/llbsolver/file `docopy`, `unpack` and `applyRootArchive`, tonistiigi/fsutil
//! copy/copy.go and mkdir.go):
//!
//! - Sources are cleaned and confined to their root (`../x` is `x`, `/x` is the root's `x`).
//!   Wildcards are Go's `filepath.Match` per path segment; a wildcard that matches nothing copies
//!   nothing (BuildKit's `AllowEmptyWildcard`). Context sources come from
//!   [`BuildContext::select_sources`], so `.dockerignore`d files are never read.
//! - A source that is itself a symlink, or whose path goes through one (`COPY link/foo .`), is
//!   followed (`FollowSymlinks`) inside its root: a context link to `/etc/passwd` means the
//!   context's `etc/passwd`, and is "not found" when the context has none (BuildKit resolves it
//!   with `fs.RootPath` in the transferred context; see [`BuildContext::select_sources`]).
//!   Symlinks inside a copied directory are copied as links, never followed.
//! - A directory source copies its contents (`CopyDirContentsOnly`). The destination is joined to
//!   the WORKDIR when relative; it is a directory when it ends in `/` (or is `.`). Each source
//!   (every wildcard match, every heredoc) is copied onto the destination in turn, as BuildKit
//!   chains one copy action per source: several files to `/dest` leave the last one as the file
//!   `/dest` (checked with BuildKit v0.32). A file copied onto an existing directory (symlinks
//!   followed) goes inside it.
//! - Missing parent directories (fsutil `MkdirAll`), and the destination directory a directory's
//!   contents are copied into when it is missing, are created 0755 (the 0777 bits of an octal
//!   `--chmod`) and owned by the `--chown` user (root without it); existing ones are left as they
//!   are. ADD's archive destination is always made 0755 (BuildKit's `unpack`).
//! - Copied files keep their mode, mtime and xattrs; the owner is 0:0 for the files of a local
//!   directory context (the build client resets it) and the source's for `--from` and for a
//!   context unpacked from a tar (stdin or a URL: BuildKit's unpack keeps the tar's owners),
//!   unless `--chown`. `--chmod` applies to
//!   every copied file and directory ([`mode`]). A copied directory gets its source's attributes
//!   when it is below the copied root; the destination directory itself never gets the source
//!   root's (it is made as above, or left as it was).
//! - A file over an existing directory is fsutil's "cannot replace to directory ... with file",
//!   a directory over an existing file "cannot copy to non-directory". Files linked together in
//!   the source are linked together in the copy.
//! - `--chown` names are looked up in the TARGET image's `/etc/passwd` and `/etc/group`; a user
//!   without a group gets their primary group, a numeric user without a group gets the same
//!   number as gid (BuildKit's `readUser`).
//! - `ADD` extracts a local tar archive (plain, gzip, bzip2, xz or zstd, recognised by content, not
//!   name) into the destination directory ([`extract`]). A URL's download and a git checkout
//!   are copied by the worker from their own directories (a checkout as [`CopySource::Checkout`]).
//! - `--exclude` patterns (patternmatcher syntax) are matched against paths relative to each
//!   copied directory, and against the matched path for a wildcard source.
//!
//! Where kiln differs from BuildKit, the item that differs says why.

pub(crate) mod extract;
mod mode;
mod reuse;
mod target;

use crate::builder::steps::union::{
    FileKind, Found, MergedDir, Metadata, Node, UnionError, UnionFs, display,
};
use crate::container::user::{self, UserError};
use crate::frontend::context::dockerignore::{SegmentGlob, clean};
use crate::frontend::context::{
    BuildContext, ContextError, ContextOwners, Dockerignore, DockerignoreError, ParentsSource,
};
use crate::frontend::instruction::InlineFile;
use crate::solver::Cancel;
use mode::Chmod;
use nix::sys::stat::SFlag;
use nix::sys::time::TimeSpec;
pub use reuse::PreviousCopy;
use reuse::Reuse;
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use target::{Attributes, DestDir, Target};

/// Where a COPY/ADD reads from.
#[derive(Debug, Clone, Copy)]
pub enum CopySource<'a> {
    /// The build context, with its `.dockerignore` applied.
    Context { context: &'a BuildContext },
    /// `COPY --from`: a stage or image, as its snapshot directories, top first.
    Layers { layers: &'a [PathBuf] },
    /// `ADD <git ref>`: a checkout, copied from its root as BuildKit copies a git source
    /// (`llb.Copy(st, "/", dest)` without `CopyDirContentsOnly`): its files owned by root, and
    /// the destination directory given the checkout root's mode and mtime.
    Checkout { dir: &'a Path },
}

/// One COPY/ADD step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyRequest {
    /// The sources, after word expansion.
    pub sources: Vec<String>,
    /// Heredoc files (`COPY <<EOF /x`), already expanded.
    pub inline: Vec<InlineFile>,
    /// The destination as written (after word expansion).
    pub dest: String,
    /// The WORKDIR a relative destination is joined to.
    pub workdir: String,
    /// `--chown=user[:group]`, names resolved in the target image.
    pub chown: Option<String>,
    /// `--chmod`: octal or symbolic.
    pub chmod: Option<String>,
    /// ADD: extract local tar archives.
    pub add: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `COPY --parents`: each source keeps its path below its root ([`ParentsSource`]).
    pub parents: bool,
}

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Non-directory entries written (files, links, symlinks, nodes).
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A context source names nothing left in the context (Docker's wording).
    #[error(
        "COPY failed: file not found in build context or excluded by .dockerignore: stat {source_path}: file does not exist"
    )]
    NotInContext {
        /// The source as written.
        source_path: String,
    },
    /// A `--from` source names nothing in the stage or image.
    #[error("COPY failed: {source_path:?} not found in the --from stage or image")]
    NotInSource {
        /// The source as written.
        source_path: String,
    },
    /// The context could not be matched against a source.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// A source wildcard is malformed.
    #[error("bad COPY/ADD source pattern {source_path:?}: {reason}")]
    BadSourcePattern {
        /// The source as written.
        source_path: String,
        /// What is wrong.
        reason: String,
    },
    /// COPY of a URL or git repository (BuildKit's message).
    #[error("source can't be a {what} for COPY: {source_path}; use ADD")]
    RemoteForCopy {
        /// `URL` or `git ref`.
        what: &'static str,
        /// The source as written.
        source_path: String,
    },
    /// ADD of a URL or git repository reached the copy of local files: kiln's compiler sends
    /// those to their own sources, so this is an internal error.
    #[error(
        "ADD {source_path}: a {what} reached the copy of local sources (an internal error in kiln)"
    )]
    RemoteInLocalCopy {
        /// `URL` or `git repository`.
        what: &'static str,
        /// The source as written.
        source_path: String,
    },
    /// A bad `--chmod` value (BuildKit's message).
    #[error("{0}")]
    BadChmod(String),
    /// A `--chown` value that is not `user[:group]`.
    #[error("invalid --chown value {value:?}: {reason}")]
    BadChown {
        /// The value as written.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--chown` user or group the target image does not know, or its files cannot be read.
    #[error("--chown={value}: {source}")]
    Chown {
        /// The value as written.
        value: String,
        /// Why it could not be resolved.
        source: UserError,
    },
    /// A bad `--exclude` pattern.
    #[error("bad --exclude pattern: {0}")]
    Exclude(#[from] DockerignoreError),
    /// A heredoc whose name cannot be a file name.
    #[error("heredoc name {name:?} cannot be used as a file name")]
    BadInlineName {
        /// The heredoc name.
        name: String,
    },
    /// A directory copied where a non-directory is (fsutil's message).
    #[error("cannot copy to non-directory: {path}")]
    NotADirectory {
        /// The destination path.
        path: String,
    },
    /// A directory needed where a non-directory is (fsutil `MkdirAll`'s ENOTDIR).
    #[error("mkdir {path}: not a directory")]
    MkdirNotADirectory {
        /// The path that is not a directory.
        path: String,
    },
    /// A non-directory copied where a directory is (fsutil's message).
    #[error("cannot replace to directory {path} with file")]
    ReplaceDirectory {
        /// The destination path.
        path: String,
    },
    /// A name that a layer would read as a whiteout.
    #[error(
        "cannot create {path}: a name starting with .wh. would read as a whiteout in the layer; rename it"
    )]
    WhiteoutName {
        /// The destination path.
        path: String,
    },
    /// A character device 0/0, which a snapshot reads as a whiteout.
    #[error(
        "cannot create {path}: a character device 0/0 is an overlay whiteout and would delete the path from the image"
    )]
    WhiteoutDevice {
        /// The destination path.
        path: String,
    },
    /// An ADD archive entry that cannot be extracted.
    #[error("ADD failed: archive {archive}: entry {entry:?}: {reason}")]
    Archive {
        /// The archive source as written.
        archive: String,
        /// The entry's path (lossy UTF-8).
        entry: String,
        /// Why.
        reason: String,
    },
    /// An ADD archive that cannot be read (corrupt compression or tar).
    #[error("ADD failed: cannot read archive {archive}: {source}")]
    ArchiveRead {
        /// The archive source as written.
        archive: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Reading the source or target layers failed.
    #[error(transparent)]
    Union(#[from] UnionError),
    /// A file operation on the destination failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The destination path.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The build was cancelled.
    #[error("copy cancelled")]
    Cancelled,
}

/// Runs a COPY or ADD: reads `request.sources` (and heredocs) from `source` and writes them into
/// `upper`, resolving the destination in the target image `lowers` (top first) with `upper` on
/// top. `cancel` is checked between files.
pub fn copy(
    request: &CopyRequest,
    source: &CopySource<'_>,
    lowers: &[PathBuf],
    upper: &Path,
    cancel: &Cancel,
) -> Result<CopyStats, CopyError> {
    copy_reusing(request, source, lowers, upper, cancel, None)
}

/// [`copy`] that, given the `previous` run of the same COPY from the build context (same
/// instruction, same `lowers`), links the files that did not change since from its snapshot
/// instead of copying them (see [`PreviousCopy`] and the `reuse` module for when a link stands
/// for a copy and why that is safe): the upper directory, and so the layer, is the one a
/// full copy gives. `previous` is ignored for ADD and for `--from` sources.
pub fn copy_reusing(
    request: &CopyRequest,
    source: &CopySource<'_>,
    lowers: &[PathBuf],
    upper: &Path,
    cancel: &Cancel,
    previous: Option<&PreviousCopy<'_>>,
) -> Result<CopyStats, CopyError> {
    for source_path in &request.sources {
        refuse_remote(source_path, request.add)?;
    }
    let chmod = request
        .chmod
        .as_deref()
        .map(Chmod::parse)
        .transpose()
        .map_err(CopyError::BadChmod)?;
    let chown = request
        .chown
        .as_deref()
        .map(|value| resolve_chown(value, lowers))
        .transpose()?;
    let exclude = Dockerignore::from_patterns(&request.exclude)?;
    let (tree, from_context, root_owned) = match source {
        CopySource::Context { context } => {
            let allowed = context.files().into_iter().map(str::to_string).collect();
            (
                UnionFs::filtered(context.root().to_path_buf(), allowed)?,
                true,
                context.owners() == ContextOwners::Root,
            )
        }
        CopySource::Layers { layers } => (UnionFs::new(layers.to_vec())?, false, false),
        // A git checkout: root's files, as BuildKit's git source makes them.
        CopySource::Checkout { dir } => (UnionFs::new(vec![dir.to_path_buf()])?, true, true),
    };
    let mut matches = Vec::new();
    for source_path in &request.sources {
        if request.parents {
            matches.extend(select_parents(source, &tree, source_path)?);
            continue;
        }
        let found = match source {
            CopySource::Context { context } => select_in_context(context, source_path)?,
            CopySource::Layers { .. } | CopySource::Checkout { .. } => {
                select_in_layers(&tree, source_path)?
            }
        };
        matches.extend(found.into_iter().filter(|m| {
            // A wildcard match is itself subject to --exclude (`COPY --exclude=*.txt hom* /d/`).
            !(has_wildcards(source_path)
                && std::str::from_utf8(&m.path).is_ok_and(|p| exclude.is_excluded(p)))
        }));
    }
    let dest = Dest::new(&request.dest, &request.workdir);
    let mut copier = Copier {
        target: Target::new(lowers, upper)?,
        tree: &tree,
        from_context,
        whole_root: matches!(source, CopySource::Checkout { .. }),
        root_owned,
        chmod,
        chown,
        exclude,
        cancel,
        stats: CopyStats::default(),
        links: HashMap::new(),
        reuse: match (previous, source) {
            (Some(previous), CopySource::Context { .. }) if !request.add => {
                Some(Reuse::open(previous)?)
            }
            _ => None,
        },
    };
    for found in &matches {
        copier.copy_match(found, &dest, request.add)?;
    }
    for file in &request.inline {
        copier.copy_inline(file, &dest)?;
    }
    copier.target.finish()?;
    Ok(copier.stats)
}

/// WORKDIR: `mkdir -p path` (absolute) in the target `lowers` with `upper` on top, following the
/// image's symlinks inside it. Nothing is written when the directory exists; missing directories
/// are created 0755 and owned by `chown` (BuildKit creates them as the current USER) or root.
pub fn mkdir(
    path: &str,
    chown: Option<(u32, u32)>,
    lowers: &[PathBuf],
    upper: &Path,
) -> Result<(), CopyError> {
    let mut target = Target::new(lowers, upper)?;
    let components = target.resolve(&clean(&format!("/{path}")), true)?;
    target.mkdir_all(&components, 0o755, chown.unwrap_or((0, 0)))?;
    target.finish()
}

/// One source path to copy: relative to the source root, `/`-joined (empty for the root).
#[derive(Debug)]
struct Match {
    /// The source as written, for messages.
    source: String,
    path: Vec<u8>,
    /// `COPY --parents`: the include pattern below `path`, whose directory's contents are
    /// copied keeping their paths.
    include: Option<Dockerignore>,
}

impl Match {
    /// The name a file source gets inside a destination directory: its own last component (a
    /// link's name, not its target's).
    fn base_name(&self) -> OsString {
        let last = self.path.rsplit(|b| *b == b'/').next().unwrap_or_default();
        OsString::from_vec(last.to_vec())
    }
}

/// The destination: cleaned, absolute, and whether it must be a directory.
#[derive(Debug)]
struct Dest {
    path: String,
    dir: bool,
}

impl Dest {
    /// BuildKit's `pathRelativeToWorkingDir`: a relative destination is joined to the WORKDIR,
    /// `.` and a trailing `/` (kept through cleaning) mean a directory.
    fn new(dest: &str, workdir: &str) -> Dest {
        let dir = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
        let joined = if dest.starts_with('/') {
            dest.to_string()
        } else {
            format!("/{workdir}/{dest}")
        };
        Dest {
            path: clean(&joined),
            dir,
        }
    }

    /// The directory above the destination (`/` for `/`).
    fn parent(&self) -> &str {
        match self.path.rsplit_once('/') {
            Some(("", _)) | None => "/",
            Some((parent, _)) => parent,
        }
    }
}

/// A directory on the way to what `COPY --parents` copies.
struct LazyDir {
    /// Its name in the directory above.
    name: OsString,
    /// The attributes it gets once everything below is written: its source's, when the copy
    /// made it; `None` for the destination root and directories that were already there.
    attributes: Option<Attributes>,
    /// The directory, once made.
    made: Option<DestDir>,
}

/// A file's (device, inode).
type Inode = (u64, u64);

/// The state of one copy.
struct Copier<'a> {
    target: Target,
    tree: &'a UnionFs,
    from_context: bool,
    /// The destination directory of a copied directory takes the directory's own attributes
    /// (a git checkout's root), not only its contents.
    whole_root: bool,
    /// Whether the copies are root's whoever owns the sources (a local directory context).
    root_owned: bool,
    chmod: Option<Chmod>,
    chown: Option<(u32, u32)>,
    exclude: Dockerignore,
    cancel: &'a Cancel,
    stats: CopyStats,
    /// Source files with several links: (device, inode) in the source to the path of the first
    /// copy and its (device, inode) in `upper`.
    links: HashMap<Inode, (Vec<OsString>, Inode)>,
    /// The previous run of this COPY, to link unchanged files from.
    reuse: Option<Reuse<'a>>,
}

impl Copier<'_> {
    fn check_cancel(&self) -> Result<(), CopyError> {
        if self.cancel.is_cancelled() {
            return Err(CopyError::Cancelled);
        }
        Ok(())
    }

    /// The owner of directories made on the way to the destination.
    fn new_dir_owner(&self) -> (u32, u32) {
        self.chown.unwrap_or((0, 0))
    }

    /// The mode of directories made on the way to the destination (and of the destination
    /// itself when a directory's contents are copied to a new path): fsutil `Copy` and
    /// `prepareTargetDir` call `MkdirAll` with an octal `--chmod` (through Go's `os.FileMode`,
    /// which keeps only the 0777 bits), else 0755; a symbolic `--chmod` is not applied to them
    /// (buildctl v0.32: `--chmod=777` makes `/p/q/dst` all 0777, `--chmod=4755` 0755,
    /// `--chmod=u+x,g=r` 0755).
    fn new_dir_mode(&self) -> u32 {
        match &self.chmod {
            Some(Chmod::Octal(mode)) => mode & 0o777,
            _ => 0o755,
        }
    }

    /// The attributes a copy of a source file with `meta` gets.
    fn attributes(&self, meta: &Metadata, xattrs: Vec<(CString, Vec<u8>)>) -> Attributes {
        let (uid, gid) = self.chown.unwrap_or(if self.root_owned {
            (0, 0)
        } else {
            (meta.uid, meta.gid)
        });
        let mode = match &self.chmod {
            Some(chmod) if meta.kind != FileKind::Symlink => {
                chmod.apply(meta.mode, meta.kind == FileKind::Dir)
            }
            _ => meta.mode,
        };
        Attributes {
            uid,
            gid,
            mode,
            xattrs,
            mtime: Some(TimeSpec::new(meta.mtime, meta.mtime_nsec)),
        }
    }

    fn not_found(&self, found: &Match) -> CopyError {
        if self.from_context {
            CopyError::NotInContext {
                source_path: found.source.clone(),
            }
        } else {
            CopyError::NotInSource {
                source_path: found.source.clone(),
            }
        }
    }

    fn copy_match(&mut self, found: &Match, dest: &Dest, add: bool) -> Result<(), CopyError> {
        self.check_cancel()?;
        let resolved = self.tree.resolve_components(&[], &found.path, true)?;
        match self.tree.walk(&resolved)? {
            Found::Missing => Err(self.not_found(found)),
            Found::Node(node) => {
                if add
                    && node.meta.kind == FileKind::File
                    && extract::is_archive(self.tree.open_node(&node)?)
                {
                    // BuildKit's `unpack`: the destination is a directory, made as `MkdirAll`
                    // with 0755 whatever `--chmod` says.
                    let dst = self.target.resolve(&dest.path, true)?;
                    self.target.mkdir_all(&dst, 0o755, self.new_dir_owner())?;
                    let file = self.tree.open_node(&node)?;
                    return extract::extract(self, file, &found.source, &dst);
                }
                let (dir, name) = self.file_destination(dest, found.base_name())?;
                self.copy_node(&node, &dir, &name)
            }
            Found::Dir(dir, meta) if self.whole_root => {
                let dst = self.dest_dir_for_contents(dest)?;
                let attributes = self.attributes(&meta, self.tree.dir_xattrs(&dir)?);
                self.copy_children(&dir, Path::new(""), &dst)?;
                self.target.set_dir_attributes(&dst, &attributes)
            }
            Found::Dir(dir, _) => {
                let dst = self.dest_dir_for_contents(dest)?;
                match &found.include {
                    Some(include) => {
                        let mut dirs = vec![LazyDir {
                            name: OsString::new(),
                            attributes: None,
                            made: Some(dst),
                        }];
                        self.copy_included(&dir, Path::new(""), include, &mut dirs)
                    }
                    None => self.copy_children(&dir, Path::new(""), &dst),
                }
            }
        }
    }

    /// The destination a directory's contents are copied into, made when missing.
    fn dest_dir_for_contents(&mut self, dest: &Dest) -> Result<DestDir, CopyError> {
        self.ensure_dest_parent(dest)?;
        let dst = self.target.resolve(&dest.path, true)?;
        match self.target.lookup(&dst)? {
            Found::Node(_) => {
                return Err(CopyError::NotADirectory {
                    path: display(&dst),
                });
            }
            Found::Missing => {
                self.target
                    .mkdir_all(&dst, self.new_dir_mode(), self.new_dir_owner())?;
            }
            Found::Dir(..) => {}
        }
        self.target.dest_dir(&dst)
    }

    /// fsutil `Copy`: the destination's parent (the destination itself when it must be a
    /// directory) is made first.
    fn ensure_dest_parent(&mut self, dest: &Dest) -> Result<(), CopyError> {
        let ensure = if dest.dir {
            dest.path.as_str()
        } else {
            dest.parent()
        };
        let components = self.target.resolve(ensure, true)?;
        self.target
            .mkdir_all(&components, self.new_dir_mode(), self.new_dir_owner())
    }

    /// Where a file named `base_name` goes: inside the destination when that is a directory
    /// (symlinks followed), else the destination itself. Returns its directory, ready for
    /// writing, and its name.
    fn file_destination(
        &mut self,
        dest: &Dest,
        base_name: OsString,
    ) -> Result<(DestDir, OsString), CopyError> {
        self.ensure_dest_parent(dest)?;
        let mut dst = self.target.resolve(&dest.path, true)?;
        if matches!(self.target.lookup(&dst)?, Found::Dir(..)) {
            dst.push(base_name);
        }
        let Some((name, parent)) = dst.split_last() else {
            return Err(CopyError::ReplaceDirectory {
                path: "/".to_string(),
            });
        };
        self.target
            .mkdir_all(parent, self.new_dir_mode(), self.new_dir_owner())?;
        let dir = self.target.dest_dir(parent)?;
        Ok((dir, name.clone()))
    }

    /// Copies the entries of the source directory `src` (at `rel` below the copied root) into
    /// `dst`.
    fn copy_children(
        &mut self,
        src: &MergedDir,
        rel: &Path,
        dst: &DestDir,
    ) -> Result<(), CopyError> {
        for child in self.tree.children(src)? {
            self.check_cancel()?;
            let rel = rel.join(&child.name);
            if self.excluded(&rel, child.meta.kind == FileKind::Dir) {
                continue;
            }
            match self.tree.lookup_child(src, &child)? {
                Found::Dir(sub, meta) => {
                    let attributes = self.attributes(&meta, self.tree.dir_xattrs(&sub)?);
                    let owner = (attributes.uid, attributes.gid);
                    let (sub_dst, _) =
                        self.target
                            .child_dir(dst, &child.name, attributes.mode, owner, false)?;
                    self.copy_children(&sub, &rel, &sub_dst)?;
                    self.target.set_dir_attributes(&sub_dst, &attributes)?;
                }
                Found::Node(node) => self.copy_node(&node, dst, &child.name)?,
                // Removed since the listing.
                Found::Missing => {}
            }
        }
        Ok(())
    }

    /// `COPY --parents`: copies what `include` keeps below the source directory `src` (at `rel`
    /// below the copied root) into the last of `dirs`, keeping paths. As fsutil's copier does
    /// with include patterns, a directory the pattern does not match is made only once
    /// something below it is copied (`dirs` holds those not made yet), with its source's
    /// attributes; one it matches is copied whole.
    fn copy_included(
        &mut self,
        src: &MergedDir,
        rel: &Path,
        include: &Dockerignore,
        dirs: &mut Vec<LazyDir>,
    ) -> Result<(), CopyError> {
        for child in self.tree.children(src)? {
            self.check_cancel()?;
            let rel = rel.join(&child.name);
            let is_dir = child.meta.kind == FileKind::Dir;
            // A name that is not UTF-8 cannot match a pattern.
            let Some(rel_str) = rel.to_str() else {
                continue;
            };
            if self.excluded(&rel, is_dir) {
                continue;
            }
            let included = include.is_excluded(rel_str);
            if !(included || (is_dir && include.may_match_below(rel_str))) {
                continue;
            }
            match self.tree.lookup_child(src, &child)? {
                Found::Dir(sub, meta) => {
                    let attributes = self.attributes(&meta, self.tree.dir_xattrs(&sub)?);
                    if included {
                        let owner = (attributes.uid, attributes.gid);
                        let parent = self.made_dir(dirs)?;
                        let (sub_dst, _) = self.target.child_dir(
                            parent,
                            &child.name,
                            attributes.mode,
                            owner,
                            false,
                        )?;
                        self.copy_children(&sub, &rel, &sub_dst)?;
                        self.target.set_dir_attributes(&sub_dst, &attributes)?;
                        continue;
                    }
                    dirs.push(LazyDir {
                        name: child.name.clone(),
                        attributes: Some(attributes),
                        made: None,
                    });
                    let walked = self.copy_included(&sub, &rel, include, dirs);
                    let done = dirs.pop();
                    walked?;
                    if let Some(LazyDir {
                        attributes: Some(attributes),
                        made: Some(made),
                        ..
                    }) = done
                    {
                        self.target.set_dir_attributes(&made, &attributes)?;
                    }
                }
                Found::Node(node) if included => {
                    let parent = self.made_dir(dirs)?;
                    self.copy_node(&node, parent, &child.name)?;
                }
                Found::Node(_) | Found::Missing => {}
            }
        }
        Ok(())
    }

    /// The last of `dirs`, made (with the ones above it that are not yet) if needed.
    fn made_dir<'d>(&mut self, dirs: &'d mut [LazyDir]) -> Result<&'d DestDir, CopyError> {
        let first = dirs.iter().rposition(|d| d.made.is_some()).unwrap_or(0);
        for index in first + 1..dirs.len() {
            let (above, rest) = dirs.split_at_mut(index);
            let (Some(parent), Some(dir)) =
                (above.last().and_then(|d| d.made.as_ref()), rest.first_mut())
            else {
                break;
            };
            let (mode, owner) = dir
                .attributes
                .as_ref()
                .map_or((0o755, (0, 0)), |a| (a.mode, (a.uid, a.gid)));
            let (made, created) = self
                .target
                .child_dir(parent, &dir.name, mode, owner, false)?;
            // fsutil copies a delayed directory's attributes only when it made it.
            if !created {
                dir.attributes = None;
            }
            dir.made = Some(made);
        }
        dirs.last()
            .and_then(|d| d.made.as_ref())
            .ok_or_else(|| CopyError::Io {
                op: "create",
                path: "a parent directory".to_string(),
                source: io::Error::other("no destination directory"),
            })
    }

    /// Whether `--exclude` leaves `rel` out. An excluded directory is still entered when an
    /// exception (`!pattern`) may re-include something below it; kiln then creates the
    /// directory even if nothing inside is re-included (BuildKit creates it only if something
    /// is).
    fn excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let Some(rel) = rel.to_str() else {
            return false;
        };
        if self.exclude.is_empty() || !self.exclude.is_excluded(rel) {
            return false;
        }
        !(is_dir && self.exclude.exception_may_reach_below(rel))
    }

    /// Copies the non-directory `node` to `name` in `dst`.
    fn copy_node(&mut self, node: &Node, dst: &DestDir, name: &OsStr) -> Result<(), CopyError> {
        self.check_cancel()?;
        self.target.clear_for_file(dst, name, false)?;
        let meta = node.meta;
        let attributes = self.attributes(&meta, self.tree.node_xattrs(node)?);
        match meta.kind {
            FileKind::File => {
                if let Some(reuse) = &mut self.reuse
                    && let Some(previous_dir) =
                        reuse.candidate(node.path(), &meta, dst.components(), name, &attributes)?
                    && self.target.link_from(dst, name, previous_dir, name)?
                {
                    self.stats.files += 1;
                    self.stats.bytes += meta.size;
                    return Ok(());
                }
                let key = (meta.dev, meta.ino);
                if meta.nlink > 1
                    && let Some((first, inode)) = self.links.get(&key)
                    && self.target.hardlink(dst, name, first, *inode)?
                {
                    self.stats.files += 1;
                    return Ok(());
                }
                let mut file = self.tree.open_node(node)?;
                let (bytes, inode) = self.target.write_file(dst, name, &mut file, &attributes)?;
                self.stats.bytes += bytes;
                if meta.nlink > 1 {
                    let mut path = dst.components().to_vec();
                    path.push(name.to_os_string());
                    self.links.insert(key, (path, inode));
                }
            }
            FileKind::Symlink => {
                let link = self.tree.read_link(node)?;
                self.target.symlink(dst, name, &link, &attributes)?;
            }
            FileKind::Fifo => self
                .target
                .node(dst, name, SFlag::S_IFIFO, 0, &attributes)?,
            FileKind::CharDevice => {
                self.target
                    .node(dst, name, SFlag::S_IFCHR, meta.rdev, &attributes)?;
            }
            FileKind::BlockDevice => {
                self.target
                    .node(dst, name, SFlag::S_IFBLK, meta.rdev, &attributes)?;
            }
            // A socket has no content to copy, and layers leave sockets out.
            FileKind::Socket | FileKind::Dir => return Ok(()),
        }
        self.stats.files += 1;
        Ok(())
    }

    /// A heredoc file: BuildKit makes it with `Mkfile(name, 0644, data)` (owned by root, the
    /// time of the build) and copies it like a file source.
    fn copy_inline(&mut self, file: &InlineFile, dest: &Dest) -> Result<(), CopyError> {
        self.check_cancel()?;
        let cleaned = clean(&format!("/{}", file.name));
        let base = cleaned.rsplit('/').next().unwrap_or_default();
        if base.is_empty() {
            return Err(CopyError::BadInlineName {
                name: file.name.clone(),
            });
        }
        let (dir, name) = self.file_destination(dest, OsString::from(base))?;
        self.target.clear_for_file(&dir, &name, false)?;
        let (uid, gid) = self.new_dir_owner();
        let mode = self.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false));
        let attributes = Attributes {
            uid,
            gid,
            mode,
            xattrs: Vec::new(),
            mtime: None,
        };
        let mut content = file.content.as_bytes();
        let (bytes, _) = self
            .target
            .write_file(&dir, &name, &mut content, &attributes)?;
        self.stats.files += 1;
        self.stats.bytes += bytes;
        Ok(())
    }
}

/// `COPY --parents`: the directories a source's root names (from the context, or a `--from`
/// tree), each with the source's include pattern. A source without wildcards must name
/// something below its root (BuildKit's `RequiredPaths`).
fn select_parents(
    source: &CopySource<'_>,
    tree: &UnionFs,
    source_path: &str,
) -> Result<Vec<Match>, CopyError> {
    let parents = ParentsSource::new(source_path);
    let include = parents.include()?;
    let roots = match source {
        CopySource::Context { context } => select_in_context(context, &parents.root)?,
        CopySource::Layers { .. } | CopySource::Checkout { .. } => {
            select_in_layers(tree, &parents.root)?
        }
    };
    let mut matches = Vec::new();
    let mut found = !parents.required();
    for root in roots {
        if !found {
            // Looked up as written below the root, no symlink followed: BuildKit checks
            // required paths on a walk that does not follow links, so a path through a
            // symlink (even one resolving inside the context) is not found.
            let components: Vec<OsString> = root
                .path
                .split(|b| *b == b'/')
                .chain(parents.pattern.as_bytes().split(|b| *b == b'/'))
                .filter(|c| !c.is_empty() && *c != b".")
                .map(|c| OsString::from_vec(c.to_vec()))
                .collect();
            found = !matches!(tree.walk(&components)?, Found::Missing);
        }
        matches.push(Match {
            source: source_path.to_string(),
            path: root.path,
            include: Some(include.clone()),
        });
    }
    if !found {
        return Err(match source {
            CopySource::Context { .. } => CopyError::NotInContext {
                source_path: source_path.to_string(),
            },
            CopySource::Layers { .. } | CopySource::Checkout { .. } => CopyError::NotInSource {
                source_path: source_path.to_string(),
            },
        });
    }
    Ok(matches)
}

/// BuildKit's `containsWildcards`: an unescaped `*`, `?` or `[`.
fn has_wildcards(source: &str) -> bool {
    let mut bytes = source.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => {
                bytes.next();
            }
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
    }
    false
}

/// The context paths a source names (`.` is the root), or none for a wildcard that matches
/// nothing.
fn select_in_context(context: &BuildContext, source: &str) -> Result<Vec<Match>, CopyError> {
    match context.select_sources(std::slice::from_ref(&source.to_string())) {
        Ok(selected) => Ok(selected
            .into_iter()
            .flat_map(|s| s.roots)
            .map(|root| Match {
                source: source.to_string(),
                path: if root == "." {
                    Vec::new()
                } else {
                    root.into_bytes()
                },
                include: None,
            })
            .collect()),
        Err(ContextError::SourceNotFound { .. }) if has_wildcards(source) => Ok(Vec::new()),
        Err(ContextError::SourceNotFound { source_path }) => {
            Err(CopyError::NotInContext { source_path })
        }
        Err(error) => Err(error.into()),
    }
}

/// The paths a `--from` source names in its layers: cleaned and confined like a context source;
/// from the first segment with a wildcard on, each segment is matched against the names in the
/// directories matched so far (fsutil `ResolveWildcards`: the part before it is resolved with
/// symlinks followed, matched symlinks are not descended). A literal source is returned as is
/// and checked when it is copied.
fn select_in_layers(tree: &UnionFs, source: &str) -> Result<Vec<Match>, CopyError> {
    let cleaned = clean(&format!("/{source}"));
    let rel = cleaned.trim_start_matches('/');
    let segments: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('/').collect()
    };
    let Some(first_wild) = segments.iter().position(|s| has_wildcards(s)) else {
        return Ok(vec![Match {
            source: source.to_string(),
            path: rel.as_bytes().to_vec(),
            include: None,
        }]);
    };
    let (literal, wild) = segments.split_at(first_wild);
    let base = tree.resolve_components(&[], literal.join("/").as_bytes(), true)?;
    let Found::Dir(base_dir, _) = tree.walk(&base)? else {
        return Ok(Vec::new());
    };
    let mut current = vec![(base_dir, join_components(&base))];
    let mut matched = Vec::new();
    for (index, segment) in wild.iter().enumerate() {
        let glob = SegmentGlob::new(segment).map_err(|reason| CopyError::BadSourcePattern {
            source_path: source.to_string(),
            reason,
        })?;
        let last = index + 1 == wild.len();
        let mut next = Vec::new();
        for (dir, path) in &current {
            for child in tree.children(dir)? {
                if !child.name.to_str().is_some_and(|name| glob.matches(name)) {
                    continue;
                }
                let mut child_path = path.clone();
                if !child_path.is_empty() {
                    child_path.push(b'/');
                }
                child_path.extend_from_slice(child.name.as_bytes());
                if last {
                    matched.push(child_path);
                } else if let Found::Dir(sub, _) = tree.lookup_in(dir, &child.name)? {
                    next.push((sub, child_path));
                }
            }
        }
        current = next;
    }
    matched.sort();
    Ok(matched
        .into_iter()
        .map(|path| Match {
            source: source.to_string(),
            path,
            include: None,
        })
        .collect())
}

fn join_components(components: &[OsString]) -> Vec<u8> {
    components
        .iter()
        .map(|c| c.as_bytes())
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// COPY of a URL or git repository is an error (as in BuildKit); ADD of one is not supported yet.
fn refuse_remote(source: &str, add: bool) -> Result<(), CopyError> {
    let lower = source.to_ascii_lowercase();
    let http = lower.starts_with("http://") || lower.starts_with("https://");
    let git = lower.starts_with("git@")
        || lower.starts_with("git://")
        || lower.starts_with("ssh://")
        || (http && (lower.ends_with(".git") || lower.contains(".git#")));
    let what = match (git, http) {
        (true, _) => ("git ref", "git repository"),
        (false, true) => ("URL", "URL"),
        (false, false) => return Ok(()),
    };
    Err(if add {
        CopyError::RemoteInLocalCopy {
            what: what.1,
            source_path: source.to_string(),
        }
    } else {
        CopyError::RemoteForCopy {
            what: what.0,
            source_path: source.to_string(),
        }
    })
}

/// Resolves `--chown=user[:group]` against the target image's `/etc/passwd` and `/etc/group`
/// (BuildKit's `readUser`): a numeric user without a group gets the same number as gid, a named
/// user their primary group. BuildKit gives an unknown name uid or gid 0; kiln refuses it (as
/// `docker build` without BuildKit did), since a typo would otherwise give root the files.
fn resolve_chown(value: &str, lowers: &[PathBuf]) -> Result<(u32, u32), CopyError> {
    let (user_part, group_part) = match value.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (value, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(CopyError::BadChown {
            value: value.to_string(),
            reason: "expected user[:group] with neither part empty".to_string(),
        });
    }
    let numeric = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let chown_error = |source| CopyError::Chown {
        value: value.to_string(),
        source,
    };
    if group_part.is_none() && numeric(user_part) {
        let id = user_part
            .parse::<u32>()
            .ok()
            .filter(|id| *id <= user::MAX_ID)
            .ok_or_else(|| {
                chown_error(UserError::OutOfRange {
                    kind: "uid",
                    value: user_part.to_string(),
                })
            })?;
        return Ok((id, id));
    }
    let resolved = user::resolve_in_image(lowers, value).map_err(chown_error)?;
    Ok((resolved.uid, resolved.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_join_the_workdir_and_know_when_they_are_directories() {
        for (dest, workdir, path, dir) in [
            ("/x", "/", "/x", false),
            ("/x/", "/", "/x", true),
            ("x", "/app", "/app/x", false),
            ("x/", "app", "/app/x", true),
            (".", "/app", "/app", true),
            ("", "/app", "/app", true),
            ("sub/.", "/app", "/app/sub", true),
            ("../../x", "/app", "/x", false),
            ("/", "/", "/", true),
        ] {
            let got = Dest::new(dest, workdir);
            assert_eq!(
                (got.path.as_str(), got.dir),
                (path, dir),
                "{dest:?} in {workdir:?}"
            );
        }
        assert_eq!(Dest::new("/a/b", "/").parent(), "/a");
        assert_eq!(Dest::new("/a", "/").parent(), "/");
        assert_eq!(Dest::new("/", "/").parent(), "/");
    }

    #[test]
    fn wildcards_are_unescaped_stars_question_marks_and_classes() {
        for (source, wild) in [
            ("a.txt", false),
            ("*.txt", true),
            ("a?c", true),
            ("[ab]", true),
            ("dir/*/x", true),
            ("lit\\*", false),
            ("lit\\[x]", false),
            ("", false),
        ] {
            assert_eq!(has_wildcards(source), wild, "{source:?}");
        }
    }

    #[test]
    fn remote_sources_are_refused_with_the_right_words() {
        for (source, add, expected) in [
            (
                "https://x.org/f.tgz",
                false,
                Some("source can't be a URL for COPY"),
            ),
            ("http://x.org/f", true, Some("a URL reached the copy")),
            (
                "git@github.com:o/r.git",
                true,
                Some("a git repository reached the copy"),
            ),
            (
                "https://github.com/o/r.git",
                false,
                Some("source can't be a git ref for COPY"),
            ),
            (
                "https://github.com/o/r.git#main",
                true,
                Some("a git repository reached the copy"),
            ),
            (
                "ssh://host/repo",
                true,
                Some("a git repository reached the copy"),
            ),
            ("httpfile.txt", true, None),
            ("dir/https://x", false, None),
        ] {
            let got = refuse_remote(source, add).err().map(|e| e.to_string());
            match expected {
                None => assert!(got.is_none(), "{source}: {got:?}"),
                Some(words) => assert!(
                    got.as_deref().is_some_and(|m| m.contains(words)),
                    "{source}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn chown_values_need_a_user_and_numeric_users_need_no_image_files() {
        let no_image: &[PathBuf] = &[];
        assert_eq!(resolve_chown("1000", no_image).unwrap(), (1000, 1000));
        assert_eq!(resolve_chown("0", no_image).unwrap(), (0, 0));
        assert_eq!(resolve_chown("10:20", no_image).unwrap(), (10, 20));
        for bad in ["", ":", "app:", ":grp"] {
            assert!(matches!(
                resolve_chown(bad, no_image),
                Err(CopyError::BadChown { .. })
            ));
        }
        assert!(matches!(
            resolve_chown("4294967295", no_image),
            Err(CopyError::Chown { .. })
        ));
    }
}
