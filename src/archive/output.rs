//! Where an archive or a rootfs tar is written: standard output, a regular file that appears
//! whole only on success, or a device, FIFO or socket written in place. `docker save -o`,
//! `docker export -o` and `docker buildx build --output type=docker|oci|tar,dest=` behave so:
//! a regular file is written beside its final name and renamed over it, and `-o /dev/null`
//! writes to the device (renaming over it would replace the device node with a regular file).
//! The file beside it is a [`BesideTemp`]: one a killed kiln left is removed by the next write
//! to the same name.

use crate::sys::atomic::BesideTemp;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

/// Why an [`Output`] could not be opened or finished.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Standard output is a terminal (docker's message: an archive would garble it).
    #[error("cowardly refusing to save to a terminal. Use the -o flag or redirect")]
    Terminal,
    #[error("failed to save to {}: it is a directory", .path.display())]
    Directory { path: PathBuf },
    #[error("failed to save to {}: directory {} does not exist", .path.display(), .dir.display())]
    NoParent { path: PathBuf, dir: PathBuf },
    /// The device, FIFO or socket at the path could not be opened for writing.
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The temporary file beside the target could not be created.
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Flushing standard output or a device, FIFO or socket failed.
    #[error("cannot write")]
    Write(#[source] io::Error),
    /// Flushing, syncing or renaming the regular file into place failed.
    #[error("cannot write {}", .path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open destination; [`Output::finish`] completes it. Dropped unfinished, a regular file's
/// temporary file is removed and the target is left as it was.
pub enum Output {
    Stdout(BufWriter<io::Stdout>),
    Special(BufWriter<File>),
    File {
        writer: BufWriter<BesideTemp>,
        target: PathBuf,
    },
}

impl Output {
    /// Opens `path`, or standard output when it is `None` (refused when that is a terminal).
    pub fn open(path: Option<&Path>) -> Result<Output, OutputError> {
        let Some(target) = path else {
            // An archive's bytes, not text: never escaped (`kiln save -o -`), and refused
            // when stdout is a terminal.
            #[allow(clippy::disallowed_methods)]
            let stdout = io::stdout();
            if stdout.is_terminal() {
                return Err(OutputError::Terminal);
            }
            return Ok(Output::Stdout(BufWriter::new(stdout)));
        };
        // Follows symlinks: `-o link-to-/dev/null` writes to the device too.
        if let Ok(meta) = fs::metadata(target) {
            if meta.is_dir() {
                return Err(OutputError::Directory {
                    path: target.to_path_buf(),
                });
            }
            if !meta.is_file() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(target)
                    .map_err(|source| OutputError::Open {
                        path: target.to_path_buf(),
                        source,
                    })?;
                return Ok(Output::Special(BufWriter::new(file)));
            }
        }
        let dir = match target.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(OutputError::NoParent {
                path: target.to_path_buf(),
                dir: dir.to_path_buf(),
            });
        }
        let temp = BesideTemp::create(target, 0o666).map_err(|e| OutputError::Create {
            path: e.path,
            source: e.source,
        })?;
        Ok(Output::File {
            writer: BufWriter::new(temp),
            target: target.to_path_buf(),
        })
    }

    pub fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::Special(out) => out,
            Output::File { writer, .. } => writer,
        }
    }

    /// Flushes; a file is synced and renamed into place. Dropped unfinished, a file's temporary
    /// file is removed ([`BesideTemp`]).
    pub fn finish(self) -> Result<(), OutputError> {
        match self {
            Output::Stdout(mut out) => out.flush().map_err(OutputError::Write),
            Output::Special(mut out) => out.flush().map_err(OutputError::Write),
            Output::File { writer, target } => {
                let temp = writer.into_inner().map_err(|e| OutputError::WriteFile {
                    path: target.clone(),
                    source: e.into_error(),
                })?;
                temp.commit().map_err(|e| OutputError::WriteFile {
                    path: target,
                    source: e.source,
                })
            }
        }
    }
}
