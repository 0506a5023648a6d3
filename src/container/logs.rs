//! A container's output in docker's json-file format: one JSON object per line,
//! `{"log":"hello\n","stream":"stdout","time":"2024-05-01T12:30:00.123456789Z"}`, each line of
//! output its own entry (a line longer than 16 KiB is cut into entries without the newline, as
//! docker's log driver does). The supervisor writes it; `kiln logs` reads it.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, Read, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The longest piece of a line one entry holds (docker's 16 KiB).
const MAX_ENTRY: usize = 16 * 1024;
/// Entries longer than this (a corrupt or foreign file) are skipped when read.
const MAX_LINE: u64 = 1 << 20;
/// The most entries one [`LogReader::read_new`] returns (a long log is read in batches).
const BATCH: usize = 4096;

/// Which stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output (and a terminal's output).
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of the log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The output, its newline included.
    pub log: String,
    /// Its stream.
    pub stream: Stream,
    /// When it was read (RFC 3339 with nanoseconds).
    pub time: String,
}

/// How big a container's log may grow: docker's json-file `max-size` and `max-file` (the
/// current file and the rotated `<log>.1`, `<log>.2`... count; with one file the log starts
/// over when full). kiln bounds every log by default ([`LogLimits::default`]), where docker's
/// json-file does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// The most bytes of one file.
    pub max_size: u64,
    /// How many files, at least 1.
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 100 MiB in each of 2 files.
    fn default() -> LogLimits {
        LogLimits {
            max_size: 100 << 20,
            max_files: 2,
        }
    }
}

impl LogLimits {
    /// `--log-opt` values (`max-size=10m`, `max-file=3`) over the defaults; docker's message for
    /// another option.
    pub fn parse(opts: &[String]) -> Result<LogLimits, String> {
        let mut limits = LogLimits::default();
        for opt in opts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| format!("invalid log opt format: {opt}"))?;
            match key {
                "max-size" => {
                    limits.max_size = crate::runtime::cgroup::parse_memory(value)
                        .ok()
                        .filter(|&size| size > 0)
                        .ok_or_else(|| {
                            format!("invalid max-size {value:?}: use a size such as 10m")
                        })?;
                }
                "max-file" => {
                    limits.max_files = value
                        .parse()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| "max-file cannot be less than 1".to_string())?;
                }
                _ => return Err(format!("unknown log opt '{key}' for json-file log driver")),
            }
        }
        Ok(limits)
    }
}

/// Appends entries to a log file; shared by the threads that read a container's streams.
#[derive(Debug, Clone)]
pub struct LogWriter {
    state: Arc<Mutex<Current>>,
}

/// The file being written, and how much it holds.
#[derive(Debug)]
struct Current {
    path: std::path::PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// `<log>.n`.
pub fn rotated_path(path: &Path, n: u32) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    name.into()
}

impl Current {
    /// Makes room for `len` more bytes: the files move up one (`log` to `log.1`...), the last
    /// one dropped; with one file the log starts over.
    fn rotate_for(&mut self, len: u64) -> io::Result<()> {
        if self.size == 0 || self.size + len <= self.limits.max_size {
            return Ok(());
        }
        let keep = self.limits.max_files.saturating_sub(1);
        if keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..keep).rev() {
            match std::fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl LogWriter {
    /// Opens (or creates, private) the log at `path` for appending, within `limits`.
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            state: Arc::new(Mutex::new(Current {
                path: path.to_path_buf(),
                file,
                size,
                limits,
            })),
        })
    }

    /// Writes one entry of `bytes` (invalid UTF-8 replaced, as Go's JSON encoder does).
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream,
            time: crate::oci::timestamp::now_rfc3339(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut current = self.state.lock().unwrap_or_else(|e| e.into_inner());
        current.rotate_for(line.len() as u64)?;
        current.file.write_all(&line)?;
        current.size += line.len() as u64;
        Ok(())
    }

    /// Copies `source` into the log as `stream` entries, one per line, until it ends (or fails:
    /// a terminal's master reads EIO once the container's processes are gone).
    pub fn pump(&self, mut source: impl Read, stream: Stream) -> io::Result<()> {
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let read = match source.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            pending.extend_from_slice(&buffer[..read]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                for piece in line.chunks(MAX_ENTRY) {
                    self.write(stream, piece)?;
                }
            }
            while pending.len() >= MAX_ENTRY {
                let piece: Vec<u8> = pending.drain(..MAX_ENTRY).collect();
                self.write(stream, &piece)?;
            }
        }
        if !pending.is_empty() {
            self.write(stream, &pending)?;
        }
        Ok(())
    }
}

/// Reads entries of a log from a byte offset on: the file at its path, and after a rotation
/// (the path names a new file) the new one from its start.
#[derive(Debug)]
pub struct LogReader {
    path: std::path::PathBuf,
    reader: BufReader<File>,
    /// A line read without its newline yet (the writer is mid-entry).
    partial: Vec<u8>,
}

impl LogReader {
    /// Opens the log at `path`, from byte `offset`.
    pub fn open(path: &Path, offset: u64) -> io::Result<LogReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(LogReader {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            partial: Vec::new(),
        })
    }

    /// Every entry the log at `path` keeps, oldest first: the rotated files (`<log>.N` down to
    /// `<log>.1`), then the current one, read in batches through `each`. Returns the reader of
    /// the current file, at its end, to follow it (`None` when there is no log).
    pub fn read_all(
        path: &Path,
        mut each: impl FnMut(Vec<Entry>) -> io::Result<()>,
    ) -> io::Result<Option<LogReader>> {
        let mut rotated = Vec::new();
        let mut n = 1;
        while rotated_path(path, n).is_file() {
            rotated.push(rotated_path(path, n));
            n += 1;
        }
        let mut last = None;
        for file in rotated.iter().rev().map(|p| p.as_path()).chain([path]) {
            let mut reader = match LogReader::open(file, 0) {
                Ok(reader) => reader,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            loop {
                let entries = reader.read_tail()?;
                if entries.is_empty() {
                    break;
                }
                each(entries)?;
            }
            last = Some(reader);
        }
        Ok(last.filter(|reader| reader.path == path))
    }

    /// [`LogReader::read_new`] without moving on to a new file after a rotation (reading a
    /// rotated file to its end).
    fn read_tail(&mut self) -> io::Result<Vec<Entry>> {
        self.read_batch(false)
    }

    /// The complete entries written since the last call, at most a batch of them: empty when
    /// there are no more now (lines that do not parse, or are too long, are skipped). At the
    /// end of a file that was rotated away, reading goes on in the new one.
    pub fn read_new(&mut self) -> io::Result<Vec<Entry>> {
        self.read_batch(true)
    }

    /// After the end of the file read: whether the path now names another file (the log was
    /// rotated); if so, reading goes on in that one from its start.
    fn follow_rotation(&mut self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt as _;
        let now = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        };
        let ours = self.reader.get_ref().metadata()?;
        let truncated = now.ino() == ours.ino() && now.len() < self.reader.stream_position()?;
        if now.ino() == ours.ino() && !truncated {
            return Ok(false);
        }
        let file = File::open(&self.path)?;
        self.reader = BufReader::new(file);
        self.partial.clear();
        Ok(true)
    }

    fn read_batch(&mut self, across_rotation: bool) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        while entries.len() < BATCH {
            let mut chunk = Vec::new();
            let limit = MAX_LINE.saturating_sub(self.partial.len() as u64) + 1;
            let read = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut chunk)?;
            if read == 0 {
                if across_rotation
                    && entries.is_empty()
                    && self.partial.is_empty()
                    && self.follow_rotation()?
                {
                    continue;
                }
                return Ok(entries);
            }
            self.partial.extend_from_slice(&chunk);
            if self.partial.last() == Some(&b'\n') {
                if let Ok(entry) = serde_json::from_slice::<Entry>(&self.partial) {
                    entries.push(entry);
                }
                self.partial.clear();
            } else if self.partial.len() as u64 > MAX_LINE {
                // Too long to be one of ours: skip to its end.
                let mut rest = Vec::new();
                self.reader.read_until(b'\n', &mut rest)?;
                self.partial.clear();
            } else {
                return Ok(entries);
            }
        }
        Ok(entries)
    }
}

/// The size of the log at `path` now (0 when there is none): where a reader of only what
/// comes next starts (`kiln start -a`).
pub fn log_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_within_their_limits() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let limits = LogLimits {
            max_size: 200,
            max_files: 2,
        };
        let writer = LogWriter::open(&path, limits).expect("open");
        let mut follower = LogReader::open(&path, 0).expect("open");
        let mut followed = Vec::new();
        for i in 0..20 {
            writer
                .write(Stream::Stdout, format!("line {i}\n").as_bytes())
                .expect("write");
            followed.extend(
                follower
                    .read_new()
                    .expect("read")
                    .into_iter()
                    .map(|e| e.log),
            );
        }
        // Two files of at most 200 bytes: the oldest lines are gone, the newest kept in order.
        assert!(std::fs::metadata(&path).expect("log").len() <= 200);
        assert!(
            std::fs::metadata(rotated_path(&path, 1))
                .expect("log.1")
                .len()
                <= 200
        );
        assert!(!rotated_path(&path, 2).exists());
        let mut kept = Vec::new();
        let current = LogReader::read_all(&path, |entries| {
            kept.extend(entries.into_iter().map(|e| e.log));
            Ok(())
        })
        .expect("read all");
        assert!(current.is_some());
        assert!(kept.len() < 20 && kept.len() >= 4, "{kept:?}");
        assert_eq!(kept.last().map(String::as_str), Some("line 19\n"));
        let first: usize = kept[0]["line ".len()..].trim_end().parse().expect("number");
        let expected: Vec<String> = (first..20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(kept, expected);
        // A reader following the log across rotations saw every line.
        let all: Vec<String> = (0..20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(followed, all);
        assert_eq!(
            LogLimits::parse(&["max-size=10m".into(), "max-file=3".into()]),
            Ok(LogLimits {
                max_size: 10 << 20,
                max_files: 3
            })
        );
        assert_eq!(
            LogLimits::parse(&["mode=fast".into()]),
            Err("unknown log opt 'mode' for json-file log driver".to_string())
        );
    }

    #[test]
    fn lines_become_entries_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let writer = LogWriter::open(&path, LogLimits::default()).expect("open");
        let long = "x".repeat(MAX_ENTRY + 10);
        let input = format!("one\ntwo\n{long}\nlast");
        writer.pump(input.as_bytes(), Stream::Stdout).expect("pump");
        writer.pump(&b"err\n"[..], Stream::Stderr).expect("pump");
        let mut reader = LogReader::open(&path, 0).expect("open");
        let entries = reader.read_new().expect("read");
        let logs: Vec<(&str, Stream)> =
            entries.iter().map(|e| (e.log.as_str(), e.stream)).collect();
        assert_eq!(logs.len(), 6, "{logs:?}");
        assert_eq!(logs[0], ("one\n", Stream::Stdout));
        assert_eq!(logs[1], ("two\n", Stream::Stdout));
        assert_eq!(logs[2].0.len(), MAX_ENTRY);
        assert_eq!(logs[3].0, "x".repeat(10) + "\n");
        assert_eq!(logs[4], ("last", Stream::Stdout));
        assert_eq!(logs[5], ("err\n", Stream::Stderr));
        assert!(crate::oci::timestamp::parse_rfc3339(&entries[0].time).is_some());
        // A half-written entry is left for the next read.
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(br#"{"log":"late\n","stream":"stdout","#)
            .expect("write");
        assert!(reader.read_new().expect("read").is_empty());
        file.write_all(br#""time":"2024-01-01T00:00:00Z"}"#)
            .expect("write");
        file.write_all(b"\n").expect("write");
        let late = reader.read_new().expect("read");
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].log, "late\n");
    }
}
