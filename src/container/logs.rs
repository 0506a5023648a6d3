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

/// Appends entries to a log file; shared by the threads that read a container's streams.
#[derive(Debug, Clone)]
pub struct LogWriter {
    file: Arc<Mutex<File>>,
}

impl LogWriter {
    /// Opens (or creates, private) the log at `path` for appending.
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(LogWriter {
            file: Arc::new(Mutex::new(file)),
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
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)
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

/// Reads entries of a log file from a byte offset on.
#[derive(Debug)]
pub struct LogReader {
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
            reader: BufReader::new(file),
            partial: Vec::new(),
        })
    }

    /// The complete entries written since the last call, at most a batch of them: empty when
    /// there are no more now (lines that do not parse, or are too long, are skipped).
    pub fn read_new(&mut self) -> io::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        while entries.len() < BATCH {
            let mut chunk = Vec::new();
            let limit = MAX_LINE.saturating_sub(self.partial.len() as u64) + 1;
            let read = (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut chunk)?;
            if read == 0 {
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
    fn lines_become_entries_and_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let writer = LogWriter::open(&path).expect("open");
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
