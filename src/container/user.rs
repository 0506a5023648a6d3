//! Users and groups as the IMAGE defines them: `USER`/`--user` values resolved against the image's
//! own `/etc/passwd` and `/etc/group`, never the host's NSS (a host user database says nothing
//! about the ids inside an image, and NSS modules must never run on image data).
//!
//! [`resolve`] follows runc's `user.GetExecUser` (moby/sys `user` package), which both `docker
//! run` and BuildKit's RUN use, with root (uid 0, gid 0, home `/`) as the defaults;
//! [`ResolvedUser::process_groups`] adds the primary group to the supplementary ones as both
//! do since their fixes for CVE-2022-36109 and CVE-2023-25173.
//! [`read_image_file`] reads those files from the layers of an image the way the overlay mount
//! would show them, without mounting anything and without ever leaving the image.

use crate::sys::xattr;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// The largest uid or gid accepted. The kernel allows up to 2^32-2, but runc and containerd cap ids
/// at 2^31-1 so that they fit a signed 32-bit integer everywhere (containerd commit de1341c).
pub const MAX_ID: u32 = i32::MAX as u32;

/// How many symbolic links one path resolution may follow before it is called a loop: Linux's
/// limit (MAXSYMLINKS, path_resolution(7)).
const MAX_SYMLINKS: usize = 40;

/// The process identity a `USER` value stands for in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups: every group of `/etc/group` that lists the user's name as a member,
    /// in file order, each once: moby/sys `user.GetExecUser`'s `Sgids`, so the primary gid is in
    /// it only when `/etc/group` lists the user in that group, and it is empty when the `USER`
    /// value names a group explicitly. The process gets [`ResolvedUser::process_groups`].
    pub additional_gids: Vec<u32>,
    /// The home directory from `/etc/passwd`; `/` when the user has no entry.
    pub home: String,
}

impl ResolvedUser {
    /// The supplementary groups the process runs with (`setgroups(2)`): the primary gid, then
    /// [`ResolvedUser::additional_gids`] (the primary gid once, when `/etc/group` lists the
    /// user in it too).
    ///
    /// Both sides kiln follows always include the primary gid, so that dropping it (`newgrp`,
    /// `setgid`) cannot shed a group whose members a file's mode denies: BuildKit's RUN since
    /// v0.12 (`ensureAdditionalGids` in executor/oci/user.go, from containerd's fix for
    /// CVE-2023-25173) and `docker run` since 20.10.18 (daemon/oci_linux.go `getUser`:
    /// `AdditionalGids = []uint32{GID}` before the /etc/group ones, CVE-2022-36109). The process
    /// sees them sorted (the kernel sorts them) and without duplicates, so the two rules give
    /// the same groups (checked with BuildKit v0.32.2 and docker 20.10.24): as root with
    /// `wheel:x:10:root`, `id` prints `groups=0(root),10(wheel)` under both.
    pub fn process_groups(&self) -> Vec<u32> {
        let mut groups = Vec::with_capacity(self.additional_gids.len() + 1);
        groups.push(self.gid);
        groups.extend(self.additional_gids.iter().filter(|gid| **gid != self.gid));
        groups
    }
}

/// Why a user could not be resolved, or an image file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A user name with no entry in the image's `/etc/passwd` (Docker's message).
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A group name with no entry in the image's `/etc/group` (Docker's message).
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    /// A uid or gid, given or found in the image's files, outside 0..=2147483647.
    #[error(
        "{kind} {value} is out of range: uids and gids must be in range 0-{max}",
        max = MAX_ID
    )]
    OutOfRange {
        /// `uid` or `gid`.
        kind: &'static str,
        /// The offending value as written.
        value: String,
    },
    /// An I/O error on one of the image's layer directories.
    #[error("cannot read {path} in the image (layer {})", layer.display())]
    Io {
        /// The path inside the image.
        path: String,
        /// The layer directory being read.
        layer: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The image file is bigger than the caller's bound.
    #[error(
        "{path} in the image is larger than {limit} bytes; a user database that big is not credible, check the image"
    )]
    TooLarge {
        /// The path inside the image.
        path: String,
        /// The bound in bytes.
        limit: u64,
    },
    /// The path names a directory, device, socket or fifo rather than a regular file.
    #[error("{path} in the image is a {kind}, not a regular file")]
    NotRegular {
        /// The path inside the image.
        path: String,
        /// What it is instead: `directory`, `character device`, `FIFO`...
        kind: &'static str,
    },
    /// The path is a symbolic link whose target the image does not have (an absolute target, or
    /// `..` climbing out, resolves inside the image, never on the host).
    #[error(
        "{path} in the image is a symbolic link to {}, which is not in the image (links resolve inside the image)",
        crate::error::EscapedPath(std::path::Path::new(target))
    )]
    DanglingSymlink {
        /// The path inside the image.
        path: String,
        /// The link's target as stored.
        target: OsString,
    },
    /// A user or group name to look up in a stage that has no filesystem yet (`FROM scratch`
    /// with nothing copied in): BuildKit fails such a file operation ("invalid user index: -1").
    #[error(
        "cannot look up {0:?}: the stage has no filesystem yet (FROM scratch) to read /etc/passwd or /etc/group from; use numeric ids (uid[:gid]) or `root`"
    )]
    NoFilesystem(String),
    /// Resolving the path followed more than 40 symbolic links.
    #[error("too many levels of symbolic links resolving {path} in the image (a symlink loop?)")]
    SymlinkLoop {
        /// The path inside the image.
        path: String,
    },
}

/// Resolves a `USER` instruction or `--user` value with Docker's semantics: `""` (root), `name`,
/// `uid`, `name:group`, `uid:gid`, `name:gid` or `uid:group`. `passwd` and `group` are the
/// contents of the image's `/etc/passwd` and `/etc/group` (`None` when the image has none).
///
/// A numeric value is always an id, never a name; an id missing from the files is allowed (with
/// gid 0 and home `/` when the user has no entry), a missing name is an error. When several
/// entries match, the first wins. Lines that do not parse (too few fields, a non-numeric id) are
/// skipped rather than read as id 0, so garbage in an image cannot alias root.
pub fn resolve(
    user: &str,
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = user.split_once(':').unwrap_or((user, ""));
    let user_arg = IdArg::parse(user_part, "uid")?;
    let group_arg = IdArg::parse(group_part, "gid")?;

    let passwd_entries = passwd.map(parse_passwd).unwrap_or_default();
    let matched = passwd_entries.into_iter().find(|entry| match &user_arg {
        // No user: whoever has the default uid, root's.
        None => entry.uid == 0,
        Some(arg) => arg.matches(entry.name, entry.uid),
    });

    let mut resolved = ResolvedUser {
        uid: 0,
        gid: 0,
        additional_gids: Vec::new(),
        home: "/".to_string(),
    };
    let mut matched_name: &[u8] = b"";
    match (&matched, &user_arg) {
        (Some(entry), _) => {
            resolved.uid = checked_id(entry.uid, "uid")?;
            resolved.gid = checked_id(entry.gid, "gid")?;
            resolved.home = String::from_utf8_lossy(entry.home).into_owned();
            matched_name = entry.name;
        }
        (None, Some(IdArg::Id(uid))) => resolved.uid = *uid,
        (None, Some(IdArg::Name(name))) => return Err(UserError::UnknownUser(name.to_string())),
        (None, None) => {}
    }

    let groups = group.map(parse_group).unwrap_or_default();
    match &group_arg {
        Some(arg) => {
            let found = groups.iter().find(|g| arg.matches(g.name, g.gid));
            resolved.gid = match (found, arg) {
                (Some(g), _) => checked_id(g.gid, "gid")?,
                (None, IdArg::Id(gid)) => *gid,
                (None, IdArg::Name(name)) => {
                    return Err(UserError::UnknownGroup(name.to_string()));
                }
            };
        }
        // Supplementary groups only in the implicit form, and only for a user found by name
        // (an entry with an empty name would match every empty member slot).
        None if !matched_name.is_empty() => {
            for g in groups.iter().filter(|g| g.members.contains(&matched_name)) {
                let gid = checked_id(g.gid, "gid")?;
                if !resolved.additional_gids.contains(&gid) {
                    resolved.additional_gids.push(gid);
                }
            }
        }
        None => {}
    }
    Ok(resolved)
}

/// The owner BuildKit's file operations give what they create for a `USER` value (WORKDIR's
/// directories), which is not what a process runs as ([`resolve`]): BuildKit's `readUser` (solver/llbsolver/ops/user_linux.go) with the client's
/// `parseUID` (client/llb/fileop.go), checked against BuildKit v0.32:
///
/// - `root` and numbers are ids, never looked up; a uid alone is also the gid (`1000` is
///   1000:1000);
/// - a user name found in the image's `/etc/passwd` gives its uid and primary gid; one that is
///   not there (or no `/etc/passwd`) gives 0:0, without an error;
/// - a group name found in `/etc/group` gives its gid; one that is not there keeps the gid the
///   user part gave;
/// - a name in a stage with no filesystem (`lower_dirs` empty: `FROM scratch` before anything
///   was copied in) is an error, as in BuildKit.
pub fn resolve_file_owner(lower_dirs: &[PathBuf], user: &str) -> Result<(u32, u32), UserError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((user, group)) => (user, group),
        None => (user, ""),
    };
    fn arg<'a>(text: &'a str, kind: &'static str) -> Result<Option<IdArg<'a>>, UserError> {
        match text {
            "root" => Ok(Some(IdArg::Id(0))),
            other => IdArg::parse(other, kind),
        }
    }
    let user_arg = arg(user_part, "uid")?;
    let group_arg = arg(group_part, "gid")?;
    let names_something = |arg: &Option<IdArg<'_>>| matches!(arg, Some(IdArg::Name(_)));
    if lower_dirs.is_empty() && (names_something(&user_arg) || names_something(&group_arg)) {
        return Err(UserError::NoFilesystem(user.to_string()));
    }
    let (mut uid, mut gid) = (0, 0);
    match user_arg {
        None => {}
        Some(IdArg::Id(id)) => (uid, gid) = (id, id),
        Some(IdArg::Name(name)) => {
            let passwd = read_image_file(lower_dirs, "/etc/passwd", MAX_ACCOUNT_FILE)?;
            let entries = passwd.as_deref().map(parse_passwd).unwrap_or_default();
            if let Some(entry) = entries.iter().find(|e| e.name == name.as_bytes()) {
                (uid, gid) = (checked_id(entry.uid, "uid")?, checked_id(entry.gid, "gid")?);
            }
        }
    }
    match group_arg {
        None => {}
        Some(IdArg::Id(id)) => gid = id,
        Some(IdArg::Name(name)) => {
            let group = read_image_file(lower_dirs, "/etc/group", MAX_ACCOUNT_FILE)?;
            let entries = group.as_deref().map(parse_group).unwrap_or_default();
            if let Some(entry) = entries.iter().find(|g| g.name == name.as_bytes()) {
                gid = checked_id(entry.gid, "gid")?;
            }
        }
    }
    Ok((uid, gid))
}

/// One half of a `USER` value: an id when it is numeric, else a name.
enum IdArg<'a> {
    Id(u32),
    Name(&'a str),
}

impl<'a> IdArg<'a> {
    /// `None` for an empty half. Numeric follows Go's `strconv.Atoi` (an optional sign, then ASCII
    /// digits), as runc does; a numeric value out of range is an error, never a name, so
    /// `2147483648` cannot match a user of that name.
    fn parse(text: &'a str, kind: &'static str) -> Result<Option<IdArg<'a>>, UserError> {
        if text.is_empty() {
            return Ok(None);
        }
        let (negative, digits) = match (text.strip_prefix('-'), text.strip_prefix('+')) {
            (Some(digits), _) => (true, digits),
            (None, Some(digits)) => (false, digits),
            (None, None) => (false, text),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Some(IdArg::Name(text)));
        }
        let out_of_range = || UserError::OutOfRange {
            kind,
            value: text.to_string(),
        };
        let value: u64 = digits.parse().map_err(|_| out_of_range())?;
        if negative && value != 0 {
            return Err(out_of_range());
        }
        let id = u32::try_from(value)
            .ok()
            .filter(|id| *id <= MAX_ID)
            .ok_or_else(out_of_range)?;
        Ok(Some(IdArg::Id(id)))
    }

    fn matches(&self, name: &[u8], id: i64) -> bool {
        match self {
            IdArg::Id(wanted) => id == i64::from(*wanted),
            IdArg::Name(wanted) => name == wanted.as_bytes(),
        }
    }
}

/// An id read from the image's files, checked before it is used.
fn checked_id(id: i64, kind: &'static str) -> Result<u32, UserError> {
    u32::try_from(id)
        .ok()
        .filter(|id| *id <= MAX_ID)
        .ok_or_else(|| UserError::OutOfRange {
            kind,
            value: id.to_string(),
        })
}

/// `name:password:uid:gid:gecos:home:shell` (passwd(5)).
struct PasswdEntry<'a> {
    name: &'a [u8],
    uid: i64,
    gid: i64,
    home: &'a [u8],
}

/// `name:password:gid:member,member` (group(5)).
struct GroupEntry<'a> {
    name: &'a [u8],
    gid: i64,
    members: Vec<&'a [u8]>,
}

/// The non-blank, non-comment lines of a passwd/group file, trimmed, split at `:`.
fn records(text: &[u8]) -> impl Iterator<Item = Vec<&[u8]>> {
    text.split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
        .map(|line| line.split(|b| *b == b':').collect())
}

/// A numeric field; `None` (the line is skipped) for anything but an optional `-` and digits.
fn id_field(field: Option<&&[u8]>) -> Option<i64> {
    std::str::from_utf8(field?).ok()?.parse().ok()
}

fn parse_passwd(text: &[u8]) -> Vec<PasswdEntry<'_>> {
    records(text)
        .filter_map(|fields| {
            Some(PasswdEntry {
                name: fields.first()?,
                uid: id_field(fields.get(2))?,
                gid: id_field(fields.get(3))?,
                home: fields.get(5).copied().unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &[u8]) -> Vec<GroupEntry<'_>> {
    records(text)
        .filter_map(|fields| {
            let members = match fields.get(3) {
                Some(list) if !list.is_empty() => list.split(|b| *b == b',').collect(),
                _ => Vec::new(),
            };
            Some(GroupEntry {
                name: fields.first()?,
                gid: id_field(fields.get(2))?,
                members,
            })
        })
        .collect()
}

/// The most bytes of an image's `/etc/passwd` or `/etc/group` that are read.
pub const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// Resolves `user` (as [`resolve`] takes it) in the image whose layers are `lower_dirs` (top
/// first), from its own `/etc/passwd` and `/etc/group` ([`read_image_file`]).
pub fn resolve_in_image(lower_dirs: &[PathBuf], user: &str) -> Result<ResolvedUser, UserError> {
    let passwd = read_image_file(lower_dirs, "/etc/passwd", MAX_ACCOUNT_FILE)?;
    let group = read_image_file(lower_dirs, "/etc/group", MAX_ACCOUNT_FILE)?;
    resolve(user, passwd.as_deref(), group.as_deref())
}

/// Reads `path` (such as `/etc/passwd`) from an image given as overlay lower directories,
/// TOP-MOST FIRST, as the merged overlay mount would show it, and `Ok(None)` when the image has
/// no such file.
///
/// The top-most layer holding a name wins; a whiteout (a 0/0 character device) hides the name in
/// the layers below, and a directory marked opaque (`trusted.overlay.opaque` or
/// `user.overlay.opaque` = `y`) hides the directories of the same name below it, as in
/// Documentation/filesystems/overlayfs.rst. A non-directory hides everything below it.
///
/// Symbolic links are resolved in the merged view with the image as `/` (an absolute target and
/// `..` at the top stay in the image, as openat2(2) RESOLVE_IN_ROOT does), walking one component
/// at a time with `O_NOFOLLOW`, so nothing outside the layer directories is ever opened. A name
/// that is missing, whited out, or under a non-directory is `Ok(None)`; a final component that is
/// not a regular file, more than 40 links, or more than `limit` bytes is an error.
pub fn read_image_file(
    lower_dirs: &[PathBuf],
    path: &str,
    limit: u64,
) -> Result<Option<Vec<u8>>, UserError> {
    read_merged(lower_dirs, path, limit, false)
}

/// [`read_image_file`], but only the first `length` bytes of the file, whatever its size (a
/// binary's headers, a script's `#!` line).
pub fn read_image_file_start(
    lower_dirs: &[PathBuf],
    path: &str,
    length: u64,
) -> Result<Option<Vec<u8>>, UserError> {
    read_merged(lower_dirs, path, length, true)
}

/// [`read_image_file`]; with `start`, the first `limit` bytes of a file of any size.
fn read_merged(
    lower_dirs: &[PathBuf],
    path: &str,
    limit: u64,
    start: bool,
) -> Result<Option<Vec<u8>>, UserError> {
    let walker = Walker { lower_dirs, path };
    let mut root = Vec::with_capacity(lower_dirs.len());
    for (layer, dir) in lower_dirs.iter().enumerate() {
        // The layer directories themselves are the caller's (trusted) paths: followed if links.
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, dir.as_path(), flags, Mode::empty())
            .map_err(|e| walker.io(layer, e))?;
        root.push(LayerDir { layer, fd });
    }
    // The merged directories from the root down to the current one; `..` pops, never past root.
    let mut stack = vec![root];
    let mut pending: VecDeque<OsString> = components(path.as_bytes());
    let mut links = 0;
    // The target of the link `path` itself names (its last component, followed in turn): when
    // that leads nowhere, the error says so rather than the file being "missing".
    let mut final_link: Option<OsString> = None;
    let missing = |final_link: Option<OsString>| match final_link {
        Some(target) => Err(UserError::DanglingSymlink {
            path: path.to_string(),
            target,
        }),
        None => Ok(None),
    };
    while let Some(name) = pending.pop_front() {
        if name == "." {
            continue;
        }
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let is_last = pending.is_empty();
        let Some(current) = stack.last() else {
            return missing(final_link);
        };
        match walker.lookup(current, &name)? {
            Found::Missing => return missing(final_link),
            Found::Directory(merged) if !is_last => stack.push(merged),
            Found::File(dir) if is_last => {
                return walker.read(dir, &name, limit, start).map(Some);
            }
            Found::Symlink(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(UserError::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                if is_last && final_link.is_none() {
                    final_link = Some(target.clone());
                }
                if target.as_bytes().starts_with(b"/") {
                    stack.truncate(1);
                }
                for component in components(target.as_bytes()).into_iter().rev() {
                    pending.push_front(component);
                }
            }
            // A component below a non-directory does not exist (ENOTDIR).
            Found::File(_) | Found::Other(_) if !is_last => return missing(final_link),
            Found::Directory(_) => {
                return Err(UserError::NotRegular {
                    path: path.to_string(),
                    kind: "directory",
                });
            }
            Found::Other(kind) => {
                return Err(UserError::NotRegular {
                    path: path.to_string(),
                    kind: kind_name(kind),
                });
            }
            Found::File(_) => {
                return Err(UserError::NotRegular {
                    path: path.to_string(),
                    kind: "file reached through a non-directory",
                });
            }
        }
    }
    // The path named a directory (such as "/" or "/etc/..").
    Err(UserError::NotRegular {
        path: path.to_string(),
        kind: "directory",
    })
}

/// What a file type is called in a message.
fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFIFO => "FIFO",
        SFlag::S_IFSOCK => "socket",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symbolic link",
        _ => "special file",
    }
}

/// A directory of one layer, opened without following symlinks.
struct LayerDir {
    /// Index into the lower directories (for error messages).
    layer: usize,
    fd: OwnedFd,
}

/// What a name is in a merged directory.
enum Found<'a> {
    Missing,
    /// The layers' directories of that name that the merged directory shows, top-most first.
    Directory(Vec<LayerDir>),
    /// A regular file in this layer directory.
    File(&'a LayerDir),
    Symlink(OsString),
    /// A device, fifo or socket: its file type.
    Other(SFlag),
}

/// The state shared by one [`read_image_file`] call: what to name in errors.
struct Walker<'a> {
    lower_dirs: &'a [PathBuf],
    path: &'a str,
}

impl Walker<'_> {
    fn io(&self, layer: usize, errno: Errno) -> UserError {
        UserError::Io {
            path: self.path.to_string(),
            layer: self.lower_dirs.get(layer).cloned().unwrap_or_default(),
            source: io::Error::from(errno),
        }
    }

    /// Looks `name` up in a merged directory: the top-most layer that has it decides.
    fn lookup<'d>(&self, merged: &'d [LayerDir], name: &OsStr) -> Result<Found<'d>, UserError> {
        for (index, dir) in merged.iter().enumerate() {
            let Some(stat) = self.stat(dir, name)? else {
                continue;
            };
            return Ok(match file_type(&stat) {
                SFlag::S_IFCHR if stat.st_rdev == 0 => Found::Missing,
                SFlag::S_IFDIR => {
                    let lower = merged.get(index + 1..).unwrap_or_default();
                    Found::Directory(self.merge_dir(dir, lower, name)?)
                }
                SFlag::S_IFLNK => Found::Symlink(
                    readlinkat(dir.fd.as_fd(), name).map_err(|e| self.io(dir.layer, e))?,
                ),
                SFlag::S_IFREG => Found::File(dir),
                other => Found::Other(other),
            });
        }
        Ok(Found::Missing)
    }

    /// The directory `name` of `top` merged with the same-named directories of the `lower`
    /// layers, down to the first opaque one or the first layer where the name is not a directory.
    fn merge_dir(
        &self,
        top: &LayerDir,
        lower: &[LayerDir],
        name: &OsStr,
    ) -> Result<Vec<LayerDir>, UserError> {
        let mut merged = vec![self.open_dir(top, name)?];
        for dir in lower {
            if merged.last().is_some_and(|d| is_opaque(d.fd.as_fd())) {
                break;
            }
            match self.stat(dir, name)? {
                None => continue,
                Some(stat) if file_type(&stat) == SFlag::S_IFDIR => {
                    merged.push(self.open_dir(dir, name)?);
                }
                // A whiteout, file or symlink below hides everything under it.
                Some(_) => break,
            }
        }
        Ok(merged)
    }

    /// `fstatat` without following a symlink; `None` when the name does not exist.
    fn stat(&self, dir: &LayerDir, name: &OsStr) -> Result<Option<FileStat>, UserError> {
        match fstatat(dir.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.io(dir.layer, e)),
        }
    }

    fn open_dir(&self, dir: &LayerDir, name: &OsStr) -> Result<LayerDir, UserError> {
        let fd = openat(dir.fd.as_fd(), name, dir_flags(), Mode::empty())
            .map_err(|e| self.io(dir.layer, e))?;
        Ok(LayerDir {
            layer: dir.layer,
            fd,
        })
    }

    /// Opens and reads the regular file `name`, at most `limit` bytes.
    /// With `start`, the first `limit` bytes of a file of any size.
    fn read(
        &self,
        dir: &LayerDir,
        name: &OsStr,
        limit: u64,
        start: bool,
    ) -> Result<Vec<u8>, UserError> {
        // O_NOFOLLOW: a symlink swapped in since the lookup is not followed. O_NONBLOCK: a fifo
        // swapped in does not block the open; the fstat below then refuses it.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = openat(dir.fd.as_fd(), name, flags, Mode::empty())
            .map_err(|e| self.io(dir.layer, e))?;
        let stat = fstat(fd.as_fd()).map_err(|e| self.io(dir.layer, e))?;
        if file_type(&stat) != SFlag::S_IFREG {
            return Err(UserError::NotRegular {
                path: self.path.to_string(),
                kind: kind_name(file_type(&stat)),
            });
        }
        let too_large = || UserError::TooLarge {
            path: self.path.to_string(),
            limit,
        };
        if !start && u64::try_from(stat.st_size).unwrap_or(u64::MAX) > limit {
            return Err(too_large());
        }
        // The size can change after the fstat: read one byte past the bound to notice.
        let mut contents = Vec::new();
        let bound = if start {
            limit
        } else {
            limit.saturating_add(1)
        };
        File::from(fd)
            .take(bound)
            .read_to_end(&mut contents)
            .map_err(|source| UserError::Io {
                path: self.path.to_string(),
                layer: self.lower_dirs.get(dir.layer).cloned().unwrap_or_default(),
                source,
            })?;
        if !start && contents.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(contents)
    }
}

/// Flags for opening a directory inside a layer: never through a symlink.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn file_type(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits())
}

/// The non-empty components of a path, `.` and `..` included (the walk handles them).
fn components(path: &[u8]) -> VecDeque<OsString> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| OsStr::from_bytes(c).to_os_string())
        .collect()
}

/// Whether overlayfs treats this directory as opaque: `trusted.overlay.opaque` (or, for
/// unprivileged overlay mounts with `userxattr`, `user.overlay.opaque`) is `y`.
fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        // ENODATA (no attribute) and any other error are "not opaque".
        .any(|name| xattr::get_fd(dir, name).is_ok_and(|value| value == b"y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
adm:x:42:43:adm:/var/adm:/bin/false
# a comment line is skipped
this is just some garbage data
broken:x:notanumber:5:broken:/broken
short:x:77
111:x:222:333::/var/garbage
odd:x:111:112::/home/odd:::::
nohome:x:500:500
   app:x:1000:1000:App:/home/app:/bin/sh   
huge:x:2147483648:1:huge:/huge
dup:x:3000:3000:first:/first
dup:x:3001:3001:second:/second
";

    const GROUP: &str = "\
root:x:0:root
bin:x:1:root,daemon
adm:x:43:
grp:x:1234:root,adm,app
444:x:555:111
odd:x:444:
staff:x:50:app,app
again:x:1234:app
# comment:x:9:app
garbage without fields
bad:x:nan:app
toolarge:x:2147483648:
";

    struct Case {
        spec: &'static str,
        expected: Result<(u32, u32, &'static [u32], &'static str), &'static str>,
    }

    fn ok(
        spec: &'static str,
        uid: u32,
        gid: u32,
        gids: &'static [u32],
        home: &'static str,
    ) -> Case {
        Case {
            spec,
            expected: Ok((uid, gid, gids, home)),
        }
    }

    fn err(spec: &'static str, message: &'static str) -> Case {
        Case {
            spec,
            expected: Err(message),
        }
    }

    /// BuildKit v0.32's owners for WORKDIR (checked with buildctl; issue 12, item 4).
    #[test]
    fn file_owners_follow_buildkit_file_operations() {
        let layer = tempfile::tempdir().unwrap();
        std::fs::create_dir(layer.path().join("etc")).unwrap();
        std::fs::write(layer.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(layer.path().join("etc/group"), GROUP).unwrap();
        let image = [layer.path().to_path_buf()];
        let bare = tempfile::tempdir().unwrap();
        let no_files = [bare.path().to_path_buf()];
        for (lowers, user, expected) in [
            (&image[..], "adm", Ok((42, 43))),
            (&image[..], "nobody-here", Ok((0, 0))),
            (&no_files[..], "nobody-here", Ok((0, 0))),
            (&image[..], "1000", Ok((1000, 1000))),
            (&no_files[..], "2000", Ok((2000, 2000))),
            (&image[..], "adm:0", Ok((42, 0))),
            (&image[..], "adm:grp", Ok((42, 1234))),
            (&image[..], "adm:nogroup", Ok((42, 43))),
            (&image[..], "5:grp", Ok((5, 1234))),
            (&image[..], "root", Ok((0, 0))),
            (&[][..], "root", Ok((0, 0))),
            (&[][..], "1000:1000", Ok((1000, 1000))),
            (&[][..], "nobody-here", Err("FROM scratch")),
            (&[][..], "1:staff", Err("FROM scratch")),
            (&image[..], "2147483648", Err("out of range")),
        ] {
            let got = resolve_file_owner(lowers, user).map_err(|e| e.to_string());
            match (got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(got, expected, "{user:?}"),
                (Err(got), Err(expected)) => assert!(got.contains(expected), "{user:?}: {got}"),
                (got, expected) => panic!("{user:?}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn resolve_follows_docker() {
        let range = "uids and gids must be in range 0-2147483647";
        let cases = [
            ok("", 0, 0, &[0, 1, 1234], "/root"),
            ok("root", 0, 0, &[0, 1, 1234], "/root"),
            ok("0", 0, 0, &[0, 1, 1234], "/root"),
            ok("adm", 42, 43, &[1234], "/var/adm"),
            ok("42", 42, 43, &[1234], "/var/adm"),
            ok("root:adm", 0, 43, &[], "/root"),
            ok("adm:1234", 42, 1234, &[], "/var/adm"),
            ok("42:1234", 42, 1234, &[], "/var/adm"),
            ok("1337:1234", 1337, 1234, &[], "/"),
            ok("1337", 1337, 0, &[], "/"),
            ok("1337:grp", 1337, 1234, &[], "/"),
            ok("root:", 0, 0, &[0, 1, 1234], "/root"),
            // Numeric is always an id: "111" is uid 111 (odd), not the user named "111".
            ok("111", 111, 112, &[], "/home/odd"),
            ok("111:444", 111, 444, &[], "/home/odd"),
            // The same gid listed twice (staff lists app twice, grp and again share 1234) once.
            ok("app", 1000, 1000, &[1234, 50], "/home/app"),
            ok("nohome", 500, 500, &[], ""),
            ok("dup", 3000, 3000, &[], "/first"),
            ok("3001", 3001, 3001, &[], "/second"),
            ok("2147483647", 2147483647, 0, &[], "/"),
            ok("7:2147483647", 7, 2147483647, &[], "/"),
            ok("+5", 5, 0, &[], "/"),
            ok("-0", 0, 0, &[0, 1, 1234], "/root"),
            // "broken" has a non-numeric uid: skipped, not read as root.
            err(
                "broken",
                "unable to find user broken: no matching entries in passwd file",
            ),
            err(
                "notuser",
                "unable to find user notuser: no matching entries in passwd file",
            ),
            err(
                "notuser:adm",
                "unable to find user notuser: no matching entries in passwd file",
            ),
            err(
                "root:notgroup",
                "unable to find group notgroup: no matching entries in group file",
            ),
            err(
                "8888:notgroup",
                "unable to find group notgroup: no matching entries in group file",
            ),
            // A group on a skipped line does not exist.
            err(
                "root:bad",
                "unable to find group bad: no matching entries in group file",
            ),
            err("-1", "uid -1 is out of range: "),
            err("0:-3", "gid -3 is out of range: "),
            err("2147483648", "uid 2147483648 is out of range: "),
            err("42:2147483648", "gid 2147483648 is out of range: "),
            err(
                "99999999999999999999999",
                "uid 99999999999999999999999 is out of range: ",
            ),
            // An entry whose own id is out of range is refused, not truncated.
            err("huge", "uid 2147483648 is out of range: "),
            err("root:toolarge", "gid 2147483648 is out of range: "),
        ];
        let mut failures = Vec::new();
        for case in &cases {
            let got = resolve(case.spec, Some(PASSWD.as_bytes()), Some(GROUP.as_bytes()));
            let matches = match (&got, &case.expected) {
                (Ok(user), Ok((uid, gid, gids, home))) => {
                    user.uid == *uid
                        && user.gid == *gid
                        && user.additional_gids == *gids
                        && user.home == *home
                }
                (Err(e), Err(message)) => {
                    let text = e.to_string();
                    text.starts_with(message) && (!message.ends_with(": ") || text.ends_with(range))
                }
                _ => false,
            };
            if !matches {
                failures.push(format!(
                    "{:?}: got {got:?}, expected {:?}",
                    case.spec, case.expected
                ));
            }
        }
        assert_eq!(cases.len(), 35);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The groups a process gets, as BuildKit v0.32.2 RUN steps and docker 20.10.24 `docker
    /// run` gave them (the `Groups:` line of /proc/self/status; issue 12, item 10), in kiln's
    /// order: the primary gid, then /etc/group's (the kernel sorts them).
    #[test]
    fn process_groups_follow_buildkit_and_docker() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
        let group =
            "root:x:0:\nwheel:x:10:root\nappgrp:x:1000:\nstaff:x:50:app,root\nvideo:x:44:app\n";
        // The primary group listed too, and two groups sharing a gid.
        let listed = "root:x:0:root\nwheel:x:10:root,app\nwheel2:x:10:root,app\n\
                      appgrp:x:1000:app\nstaff:x:50:app,app\n";
        // The /etc/group to use (with `passwd`), or none of the two files.
        let cases: [(&str, Option<&str>, &[u32]); 14] = [
            ("", Some(group), &[0, 10, 50]),
            ("0", Some(group), &[0, 10, 50]),
            ("app", Some(group), &[1000, 50, 44]),
            ("1000", Some(group), &[1000, 50, 44]),
            ("app:wheel", Some(group), &[10]),
            ("root:root", Some(group), &[0]),
            ("root:1000", Some(group), &[1000]),
            ("2000", Some(group), &[0]),
            ("", Some(listed), &[0, 10]),
            ("app", Some(listed), &[1000, 10, 50]),
            ("app:wheel", Some(listed), &[10]),
            ("", None, &[0]),
            ("1000:1000", None, &[1000]),
            ("2000", None, &[0]),
        ];
        for (spec, group, expected) in cases {
            let passwd = group.map(|_| passwd.as_bytes());
            let user = resolve(spec, passwd, group.map(str::as_bytes))
                .unwrap_or_else(|e| panic!("{spec:?}: {e}"));
            assert_eq!(user.process_groups(), expected, "{spec:?} {group:?}");
        }
    }

    #[test]
    fn resolve_without_files() {
        let cases = [
            ("", None, None, Ok((0, 0, "/"))),
            ("0", None, None, Ok((0, 0, "/"))),
            ("0:0", None, None, Ok((0, 0, "/"))),
            ("1000:50", None, None, Ok((1000, 50, "/"))),
            ("root", Some(PASSWD), None, Ok((0, 0, "/root"))),
            ("root", None, Some(GROUP), Err("unable to find user root")),
            ("1:adm", None, None, Err("unable to find group adm")),
            ("", Some(""), Some(""), Ok((0, 0, "/"))),
        ];
        let mut failures = Vec::new();
        for (spec, passwd, group, expected) in cases {
            let got = resolve(spec, passwd.map(str::as_bytes), group.map(str::as_bytes));
            let matches = match (&got, &expected) {
                (Ok(user), Ok((uid, gid, home))) => {
                    user.uid == *uid
                        && user.gid == *gid
                        && user.home == *home
                        && user.additional_gids.is_empty()
                }
                (Err(e), Err(prefix)) => e.to_string().starts_with(prefix),
                _ => false,
            };
            if !matches {
                failures.push(format!("{spec:?}: got {got:?}, expected {expected:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn long_member_lists_and_crlf_lines() {
        let mut group = String::from("big:x:1000:");
        group.push_str(
            &(1..=7500)
                .map(|i| format!("u{i}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        group.push_str("\r\n");
        let passwd = "u7500:x:7500:100::/home/u7500\r\n";
        let user =
            resolve("u7500", Some(passwd.as_bytes()), Some(group.as_bytes())).expect("resolves");
        assert_eq!(user.additional_gids, [1000]);
        assert_eq!(user.home, "/home/u7500");
    }
}
