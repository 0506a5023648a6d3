//! Cache records: what a build step produced, filed under its cache key, and what went into
//! the key the last time each step ran, so a miss can say what changed.
//!
//! Layout under the records directory (e.g. `<store>/cache`):
//! - `records/<key hex>.json`: the builder's record for a cache key (any serde type);
//! - `last/<hex digest of the position>.json`: the [`KeyParts`] a step position had last time;
//! - `tmp/`: staging for atomic writes (see [`crate::sys::atomic`]).
//!
//! A record is a cache entry, so a missing, unreadable or damaged one is a miss, never an error
//! and never a panic.

use crate::cache::CacheError;
use crate::cache::checksum::ContentSum;
use crate::oci::Digest;
use crate::sys::FsError;
use crate::sys::atomic::{Staging, atomic_write_in};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Larger record files are not read (a record of a step that reads 20,000 context files is
/// about 2 MB).
pub const MAX_RECORD_SIZE: u64 = 64 << 20;

/// How many changed context files [`CacheRecords::explain`] names before it counts the rest.
const MAX_LISTED_FILES: usize = 10;

/// What went into one cache key, kept so a later miss can say what changed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyParts {
    /// The digest of the operation itself (the instruction with everything it depends on).
    pub op: Digest,
    /// The cache keys of the step's inputs, in the builder's order; the first is the step it
    /// builds on (the step before it).
    pub inputs: Vec<Digest>,
    /// The checksum of the build-context files the step reads, if it reads any.
    pub content: Option<ContentSum>,
}

impl KeyParts {
    /// The cache key. The encoding, fixed so keys stay valid across kiln versions, is the
    /// sha256 of the text `kiln-cache-key-v1\n`, `op <digest>\n`, one `input <digest>\n` per
    /// input in order, then `content <digest>\n` or `no content\n`. Only the content's combined
    /// digest is part of the key, not its list of files.
    pub fn key(&self) -> Digest {
        let mut text = format!("kiln-cache-key-v1\nop {}\n", self.op);
        for input in &self.inputs {
            text.push_str(&format!("input {input}\n"));
        }
        match &self.content {
            Some(content) => text.push_str(&format!("content {}\n", content.digest)),
            None => text.push_str("no content\n"),
        }
        Digest::of(text.as_bytes())
    }
}

/// The key parts a step position had last time, with the position (kept to rule out a file
/// that does not belong to it).
#[derive(Serialize, Deserialize)]
struct LastKey {
    position: String,
    parts: KeyParts,
}

/// The cache records of a store.
#[derive(Debug, Clone)]
pub struct CacheRecords {
    /// `<dir>/records`.
    records: PathBuf,
    /// `<dir>/last`.
    last: PathBuf,
    staging: Staging,
}

impl CacheRecords {
    /// Opens the records under `dir`, creating its directories when missing.
    pub fn open(dir: &Path) -> Result<CacheRecords, CacheError> {
        let records = dir.join("records");
        let last = dir.join("last");
        for sub in [&records, &last] {
            crate::sys::atomic::create_private_dir_all(sub)?;
        }
        let staging = Staging::open(&dir.join("tmp"))?;
        Ok(CacheRecords {
            records,
            last,
            staging,
        })
    }

    /// The record stored for `key`, or `None` when there is none or it is unreadable, damaged,
    /// larger than [`MAX_RECORD_SIZE`] or not a `T` (all cache misses). Only a shortage of file
    /// descriptors or memory, which says nothing about the record, is an error.
    pub fn get<T: DeserializeOwned>(&self, key: &Digest) -> Result<Option<T>, CacheError> {
        read_json(&self.record_path(key))
    }

    /// Stores `value` as the record for `key`, atomically (temporary file, fsync, rename): a
    /// reader sees the old record or the new one, and a crash leaves one of them.
    pub fn put<T: Serialize>(&self, key: &Digest, value: &T) -> Result<(), CacheError> {
        self.write_json(&self.record_path(key), value)
    }

    /// Removes the record for `key`; a missing record is fine.
    pub fn remove(&self, key: &Digest) -> Result<(), CacheError> {
        let path = self.record_path(key);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(FsError::new("remove", &path, err).into())
            }
            _ => Ok(()),
        }
    }

    /// Remembers `parts` as the latest key of the step at `position` (a stable string the
    /// builder chooses, such as `<dockerfile path>#<stage>#<instruction index>`).
    pub fn remember(&self, position: &str, parts: &KeyParts) -> Result<(), CacheError> {
        let last = LastKey {
            position: position.to_string(),
            parts: parts.clone(),
        };
        self.write_json(&self.last_path(position), &last)
    }

    /// The key parts `position` had the last time it ran ([`CacheRecords::remember`]), if
    /// they are remembered and readable.
    pub fn last(&self, position: &str) -> Option<KeyParts> {
        read_json::<LastKey>(&self.last_path(position))
            .ok()
            .flatten()
            .filter(|last| last.position == position)
            .map(|last| last.parts)
    }

    /// Why `parts` differs from what `position` had last time, one reason per line: `first
    /// build of this step`, `the instruction changed`, `input 1 changed (the step before it)`,
    /// `input 2 changed`, `context file changed: src/a.txt`, `context file added: b`, `context
    /// file removed: c` (at most ten files, then `and N more changed context files`).
    pub fn explain(&self, position: &str, parts: &KeyParts) -> Vec<String> {
        let Some(before) = self.last(position) else {
            return vec!["first build of this step".to_string()];
        };
        if before.key() == parts.key() {
            return vec![
                "the cache key is unchanged, but its record is gone (pruned or removed)"
                    .to_string(),
            ];
        }
        let mut reasons = Vec::new();
        if before.op != parts.op {
            reasons.push("the instruction changed".to_string());
        }
        if before.inputs.len() != parts.inputs.len() {
            reasons.push(format!(
                "the step has {} inputs instead of {}",
                parts.inputs.len(),
                before.inputs.len()
            ));
        }
        for (index, (old, new)) in before.inputs.iter().zip(&parts.inputs).enumerate() {
            if old != new {
                reasons.push(match index {
                    0 => "input 1 changed (the step before it)".to_string(),
                    _ => format!("input {} changed", index + 1),
                });
            }
        }
        match (&before.content, &parts.content) {
            (None, Some(_)) => reasons.push("the step now reads build-context files".to_string()),
            (Some(_), None) => {
                reasons.push("the step no longer reads build-context files".to_string());
            }
            (Some(old), Some(new)) if old.digest != new.digest => {
                reasons.extend(file_changes(old, new));
            }
            _ => {}
        }
        reasons
    }

    fn record_path(&self, key: &Digest) -> PathBuf {
        self.records.join(format!("{}.json", key.hex()))
    }

    fn last_path(&self, position: &str) -> PathBuf {
        let name = Digest::of(position.as_bytes());
        self.last.join(format!("{}.json", name.hex()))
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(value).map_err(|source| CacheError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
        atomic_write_in(&self.staging, path, &bytes)?;
        Ok(())
    }
}

/// The context files that differ between two checksums, in path order, capped at
/// [`MAX_LISTED_FILES`].
fn file_changes(old: &ContentSum, new: &ContentSum) -> Vec<String> {
    let before: BTreeMap<&str, &Digest> = old
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.digest))
        .collect();
    let after: BTreeMap<&str, &Digest> = new
        .files
        .iter()
        .map(|f| (f.path.as_str(), &f.digest))
        .collect();
    let mut paths: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let changes: Vec<String> = paths
        .into_iter()
        .filter_map(|path| match (before.get(path), after.get(path)) {
            (Some(old), Some(new)) if old != new => Some(format!("context file changed: {path}")),
            (None, Some(_)) => Some(format!("context file added: {path}")),
            (Some(_), None) => Some(format!("context file removed: {path}")),
            _ => None,
        })
        .collect();
    if changes.is_empty() {
        // The digests differ but the lists agree: the old list was not the one its digest
        // came from (a record written by hand, or damaged). Say what is known.
        return vec!["the build-context files changed".to_string()];
    }
    let more = changes.len().saturating_sub(MAX_LISTED_FILES);
    let mut listed: Vec<String> = changes.into_iter().take(MAX_LISTED_FILES).collect();
    if more > 0 {
        listed.push(format!("and {more} more changed context files"));
    }
    listed
}

/// Reads and decodes the JSON file at `path`. A missing, unreadable, oversized or undecodable
/// file is `None`; only running out of file descriptors or memory is an error.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CacheError> {
    let exhausted = |err: &io::Error| {
        err.kind() == io::ErrorKind::OutOfMemory
            || matches!(
                err.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM)
            )
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if exhausted(&err) => return Err(FsError::new("open", path, err).into()),
        Err(_) => return Ok(None),
    };
    let mut bytes = Vec::new();
    match file.take(MAX_RECORD_SIZE + 1).read_to_end(&mut bytes) {
        Err(err) if exhausted(&err) => return Err(FsError::new("read", path, err).into()),
        Err(_) => return Ok(None),
        Ok(_) => {}
    }
    if bytes.len() as u64 > MAX_RECORD_SIZE {
        return Ok(None);
    }
    Ok(serde_json::from_slice(&bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::FileSum;

    fn digest(text: &str) -> Digest {
        Digest::of(text.as_bytes())
    }

    fn content(files: &[(&str, &str)]) -> ContentSum {
        let files: Vec<FileSum> = files
            .iter()
            .map(|(path, data)| FileSum {
                path: path.to_string(),
                digest: digest(&format!("{path}={data}")),
                mode: 0o100_644,
            })
            .collect();
        let all: String = files.iter().map(|f| f.digest.to_string()).collect();
        ContentSum {
            digest: digest(&all),
            files,
        }
    }

    fn parts(op: &str, inputs: &[&str], files: Option<&[(&str, &str)]>) -> KeyParts {
        KeyParts {
            op: digest(op),
            inputs: inputs.iter().map(|i| digest(i)).collect(),
            content: files.map(content),
        }
    }

    fn open() -> (tempfile::TempDir, CacheRecords) {
        let dir = tempfile::tempdir().unwrap();
        let records = CacheRecords::open(dir.path()).unwrap();
        (dir, records)
    }

    #[test]
    fn put_get_remove_round_trip() {
        let (dir, records) = open();
        let key = digest("key");
        assert_eq!(records.get::<Vec<String>>(&key).unwrap(), None);
        let value = vec!["layer".to_string(), "config".to_string()];
        records.put(&key, &value).unwrap();
        assert_eq!(records.get::<Vec<String>>(&key).unwrap(), Some(value));
        assert!(
            dir.path()
                .join(format!("records/{}.json", key.hex()))
                .is_file()
        );
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        records.remove(&key).unwrap();
        assert_eq!(records.get::<Vec<String>>(&key).unwrap(), None);
        records.remove(&key).unwrap();
    }

    #[test]
    fn unreadable_or_damaged_records_are_misses() {
        let (dir, records) = open();
        let key = digest("key");
        let path = dir.path().join(format!("records/{}.json", key.hex()));
        type Damage = fn(&Path);
        let cases: &[(&str, Damage)] = &[
            ("empty", |p| fs::write(p, "").unwrap()),
            ("garbage", |p| fs::write(p, b"\xff\xfe not json").unwrap()),
            ("truncated", |p| fs::write(p, r#"{"size": 1"#).unwrap()),
            ("another type", |p| fs::write(p, r#"["a", "b"]"#).unwrap()),
            ("a directory", |p| fs::create_dir(p).unwrap()),
            ("too large", |p| {
                File::create(p)
                    .unwrap()
                    .set_len(MAX_RECORD_SIZE + 1)
                    .unwrap()
            }),
        ];
        // A record type that none of the damaged files decodes as.
        type Record = BTreeMap<String, u64>;
        let mut failures = Vec::new();
        for (name, damage) in cases {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_dir(&path);
            damage(&path);
            match records.get::<Record>(&key) {
                Ok(None) => {}
                other => failures.push(format!("{name}: {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 6);
    }

    #[test]
    fn key_encoding_is_the_documented_one_and_ignores_the_file_list() {
        let with = parts("op", &["base", "other"], Some(&[("a", "1")]));
        let expected = format!(
            "kiln-cache-key-v1\nop {}\ninput {}\ninput {}\ncontent {}\n",
            digest("op"),
            digest("base"),
            digest("other"),
            with.content.as_ref().unwrap().digest
        );
        assert_eq!(with.key(), digest(&expected));
        let without = parts("op", &[], None);
        let expected = format!("kiln-cache-key-v1\nop {}\nno content\n", digest("op"));
        assert_eq!(without.key(), digest(&expected));

        let mut fewer_files = with.clone();
        fewer_files.content.as_mut().unwrap().files.clear();
        assert_eq!(fewer_files.key(), with.key());

        let variants = [
            parts("op2", &["base", "other"], Some(&[("a", "1")])),
            parts("op", &["base2", "other"], Some(&[("a", "1")])),
            parts("op", &["other", "base"], Some(&[("a", "1")])),
            parts("op", &["base"], Some(&[("a", "1")])),
            parts("op", &["base", "other"], Some(&[("a", "2")])),
            parts("op", &["base", "other"], None),
        ];
        for variant in &variants {
            assert_ne!(variant.key(), with.key(), "{variant:?}");
        }
    }

    #[test]
    fn key_parts_survive_json() {
        let parts = parts("op", &["base"], Some(&[("a", "1"), ("b/c", "2")]));
        let json = serde_json::to_string(&parts).unwrap();
        assert_eq!(serde_json::from_str::<KeyParts>(&json).unwrap(), parts);
    }

    #[test]
    fn explain_says_what_changed() {
        let base_files: &[(&str, &str)] = &[("a", "1"), ("b", "1"), ("c", "1")];
        let before = parts("op", &["base", "other"], Some(base_files));
        let many: Vec<(String, String)> =
            (0..15).map(|i| (format!("n{i:02}"), "1".into())).collect();
        let many: Vec<(&str, &str)> = base_files
            .iter()
            .copied()
            .chain(many.iter().map(|(p, d)| (p.as_str(), d.as_str())))
            .collect();
        let cases: Vec<(&str, KeyParts, Vec<String>)> = vec![
            (
                "instruction",
                parts("op2", &["base", "other"], Some(base_files)),
                vec!["the instruction changed".into()],
            ),
            (
                "first input",
                parts("op", &["base2", "other"], Some(base_files)),
                vec!["input 1 changed (the step before it)".into()],
            ),
            (
                "second input",
                parts("op", &["base", "other2"], Some(base_files)),
                vec!["input 2 changed".into()],
            ),
            (
                "one input fewer",
                parts("op", &["base"], Some(base_files)),
                vec!["the step has 1 inputs instead of 2".into()],
            ),
            (
                "files",
                parts(
                    "op",
                    &["base", "other"],
                    Some(&[("a", "2"), ("b", "1"), ("d", "1")]),
                ),
                vec![
                    "context file changed: a".into(),
                    "context file removed: c".into(),
                    "context file added: d".into(),
                ],
            ),
            (
                "many files",
                parts("op", &["base", "other"], Some(&many)),
                (0..10)
                    .map(|i| format!("context file added: n{i:02}"))
                    .chain(["and 5 more changed context files".to_string()])
                    .collect(),
            ),
            (
                "no more files",
                parts("op", &["base", "other"], None),
                vec!["the step no longer reads build-context files".into()],
            ),
            (
                "unchanged",
                before.clone(),
                vec![
                    "the cache key is unchanged, but its record is gone (pruned or removed)".into(),
                ],
            ),
        ];
        let (_dir, records) = open();
        let position = "Dockerfile#build#3";
        assert_eq!(
            records.explain(position, &before),
            ["first build of this step"]
        );
        records.remember(position, &before).unwrap();
        let mut failures = Vec::new();
        for (name, now, expected) in &cases {
            let got = records.explain(position, now);
            if &got != expected {
                failures.push(format!("{name}: got {got:#?}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 8);

        assert_eq!(
            records.explain("Dockerfile#build#4", &before),
            ["first build of this step"],
            "positions are separate"
        );
        let now_reads = parts("op", &["base", "other"], Some(base_files));
        records
            .remember(position, &parts("op", &["base", "other"], None))
            .unwrap();
        assert_eq!(
            records.explain(position, &now_reads),
            ["the step now reads build-context files"],
            "remember replaces the last key"
        );
    }

    #[test]
    fn a_damaged_last_key_explains_as_a_first_build() {
        let (dir, records) = open();
        let position = "Dockerfile#0#1";
        let parts = parts("op", &[], None);
        records.remember(position, &parts).unwrap();
        let file = fs::read_dir(dir.path().join("last"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        fs::write(&file, "{\"position\": ").unwrap();
        assert_eq!(
            records.explain(position, &parts),
            ["first build of this step"]
        );
    }
}
