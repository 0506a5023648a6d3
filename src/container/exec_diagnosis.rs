//! What an exec failure means in the image's terms. execve(2) answers ENOENT both when the
//! program is missing and when the interpreter its `#!` line names is: the kernel cannot say
//! which, so runc (and kiln's sandbox) report "no such file or directory" for a script that is
//! right there. When the sandbox reports that, this reads the image (the root's layers, top-most
//! first, resolved as the overlay shows them, [`super::user::read_image_file`]) for the program
//! and its `#!` line, and names the missing interpreter instead, for RUN steps and `kiln run`
//! alike.

use super::user::{UserError, read_image_file};
use crate::error::{Escaped, escape_line};
use crate::runtime::{ExecErrorKind, RuntimeError, Spec};
use std::path::PathBuf;

/// A script bigger than this is not read (its `#!` line is in the first bytes, but the reader
/// takes whole files): the exec error then stays as the kernel gave it.
const MAX_SCRIPT_BYTES: u64 = 8 << 20;

/// The kernel follows at most this many interpreters (`#!` naming a script with its own `#!`).
const MAX_INTERPRETERS: usize = 4;

/// An interpreter a program's `#!` line names that the image does not have.
#[derive(Debug, thiserror::Error)]
#[error(
    "exec: {}: the interpreter {} named on the #! line of {} is not in the image{}",
    Quoted(program),
    Escaped(interpreter),
    Escaped(script),
    crlf_hint(interpreter)
)]
pub struct MissingInterpreter {
    /// `args[0]` as given.
    pub program: String,
    /// The file whose `#!` line names the interpreter (the program, or an interpreter of it).
    pub script: String,
    /// The interpreter as the line names it.
    pub interpreter: String,
}

/// A string in double quotes, escaped, as the runtime shows the program (`exec: "/script": ...`).
struct Quoted<'a>(&'a str);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", escape_line(self.0))
    }
}

/// A `#!` line that ends in a carriage return names an interpreter with `\r` at the end: the
/// script was saved with Windows line endings.
fn crlf_hint(interpreter: &str) -> &'static str {
    if interpreter.ends_with('\r') {
        " (the line ends in a carriage return: the script has Windows (CRLF) line endings)"
    } else {
        ""
    }
}

impl MissingInterpreter {
    /// What a shell (and `docker run`) exits with when a command is not found.
    pub const EXIT_CODE: i32 = 127;
}

/// `err` as the container reports it: the missing interpreter when [`missing_interpreter`]
/// finds one, else `err` itself.
pub fn explain(spec: &Spec, err: RuntimeError) -> super::ContainerError {
    match missing_interpreter(spec, &err) {
        Some(missing) => super::ContainerError::MissingInterpreter(missing),
        None => super::ContainerError::Runtime(err),
    }
}

/// The missing interpreter behind `err`, when `err` is an exec "not found" of a program the
/// image of `spec` has, with a `#!` line naming an interpreter the image does not have.
/// `None` leaves `err` as it is (the program is missing, or the image cannot tell).
pub fn missing_interpreter(spec: &Spec, err: &RuntimeError) -> Option<MissingInterpreter> {
    let RuntimeError::Exec {
        program,
        kind: ExecErrorKind::NotFound | ExecErrorKind::NotFoundInPath,
        ..
    } = err
    else {
        return None;
    };
    let layers = layers(spec);
    // The program: the first candidate the image has (a name is looked up in PATH, as the
    // sandbox does; the sandbox also required the execute bit, which the first file found
    // almost always has).
    let (mut script, mut content) = candidates(spec, program)
        .into_iter()
        .find_map(|path| read(&layers, &path).map(|content| (path, content)))?;
    for _ in 0..MAX_INTERPRETERS {
        let interpreter = shebang(&content)?;
        match read_image_file(&layers, &interpreter, MAX_SCRIPT_BYTES) {
            Ok(None) | Err(UserError::DanglingSymlink { .. }) => {
                return Some(MissingInterpreter {
                    program: program.clone(),
                    script,
                    interpreter,
                });
            }
            // The interpreter is there: it may be a script whose own interpreter is missing.
            Ok(Some(next)) => {
                script = interpreter;
                content = next;
            }
            // Too big to be a script, not a regular file, unreadable: not this case.
            Err(_) => return None,
        }
    }
    None
}

/// The root's layers as the overlay stacks them: the upper directory (what the container or
/// step wrote so far) over the lower ones.
fn layers(spec: &Spec) -> Vec<PathBuf> {
    let rootfs = &spec.rootfs;
    rootfs
        .upper
        .iter()
        .map(|upper| upper.upper_dir.clone())
        .chain(rootfs.lower_dirs.iter().cloned())
        .collect()
}

/// Where the sandbox looks for `program`: the path itself (against the working directory when
/// relative), or each `PATH` entry of the environment (the last `PATH=` wins).
fn candidates(spec: &Spec, program: &str) -> Vec<String> {
    let in_cwd = |path: &str| {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", spec.cwd.trim_end_matches('/'))
        }
    };
    if program.contains('/') {
        return vec![in_cwd(program)];
    }
    let path = spec
        .env
        .iter()
        .rev()
        .find_map(|var| var.strip_prefix("PATH="))
        .unwrap_or(crate::frontend::stage::DEFAULT_PATH);
    path.split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            in_cwd(&format!("{}/{program}", dir.trim_end_matches('/')))
        })
        .collect()
}

/// The content of the regular file `path` in the image, when it has one.
fn read(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    read_image_file(layers, path, MAX_SCRIPT_BYTES)
        .ok()
        .flatten()
}

/// The interpreter a `#!` line names, as the kernel reads it (fs/binfmt_script.c): after `#!`
/// and blanks, up to the next blank or the end of the line, within the first 256 bytes. Only
/// an absolute path is taken (a relative one depends on the caller's directory).
fn shebang(content: &[u8]) -> Option<String> {
    let head = content.get(..content.len().min(256))?;
    let line = head.strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let start = line.iter().position(|&b| b != b' ' && b != b'\t')?;
    let rest = line.get(start..)?;
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(rest.len());
    let interpreter = String::from_utf8(rest.get(..end)?.to_vec()).ok()?;
    interpreter.starts_with('/').then_some(interpreter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_is_read_as_the_kernel_reads_it() {
        for (content, expected) in [
            (&b"#!/bin/bash\necho\n"[..], Some("/bin/bash")),
            (b"#! /usr/bin/env python3\n", Some("/usr/bin/env")),
            (b"#!\t/bin/sh -e\n", Some("/bin/sh")),
            (b"#!/bin/sh\r\necho\r\n", Some("/bin/sh\r")),
            (b"#!bash\n", None),
            (b"#!\n", None),
            (b"echo hi\n", None),
            (b"\x7fELF", None),
        ] {
            assert_eq!(shebang(content).as_deref(), expected, "{content:?}");
        }
    }

    #[test]
    fn the_message_names_the_interpreter_and_the_script_escaped() {
        let err = MissingInterpreter {
            program: "/script".into(),
            script: "/script".into(),
            interpreter: "/bin/bash".into(),
        };
        assert_eq!(
            err.to_string(),
            "exec: \"/script\": the interpreter /bin/bash named on the #! line of /script is not in the image"
        );
        let err = MissingInterpreter {
            program: "run".into(),
            script: "/usr/bin/run".into(),
            interpreter: "/bin/sh\r".into(),
        };
        assert_eq!(
            err.to_string(),
            "exec: \"run\": the interpreter /bin/sh\\r named on the #! line of /usr/bin/run is not in the image (the line ends in a carriage return: the script has Windows (CRLF) line endings)"
        );
    }
}
