//! What an exec failure means in the image's terms. execve(2) answers ENOENT both when the
//! program is missing and when the interpreter it needs is: the one its `#!` line names, or the
//! dynamic loader an ELF binary names (`PT_INTERP`, `/lib64/ld-linux-x86-64.so.2` for a glibc
//! binary in a musl image). The kernel cannot say which, so runc (and kiln's sandbox) report "no
//! such file or directory" for a program that is right there. When the sandbox reports that,
//! this reads the image (the root's layers, top-most first, resolved as the overlay shows them,
//! [`super::user::read_image_file_start`]) for the program's first bytes and names the missing
//! interpreter instead, for RUN steps and `kiln run` alike.

use super::user::{UserError, read_image_file_start};
use crate::error::{Escaped, escape_line};
use crate::runtime::{ExecErrorKind, RuntimeError, Spec};
use std::path::PathBuf;

/// How much of a program is read: the kernel reads a `#!` line from the first 256 bytes, and an
/// ELF binary's program headers and `PT_INTERP` string sit at its start.
const HEAD_BYTES: u64 = 64 << 10;

/// The kernel follows at most this many interpreters (`#!` naming a script with its own `#!`).
const MAX_INTERPRETERS: usize = 4;

/// An interpreter a program needs that the image does not have.
#[derive(Debug, thiserror::Error)]
#[error("exec: {}: {}", Quoted(program), Explained(self))]
pub struct MissingInterpreter {
    /// `args[0]` as given.
    pub program: String,
    /// The file that names the interpreter (the program, or an interpreter of it).
    pub script: String,
    /// The interpreter as the file names it.
    pub interpreter: String,
    /// Where the file names it.
    pub named_by: NamedBy,
}

/// Where a program names its interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedBy {
    /// A `#!` line.
    Shebang,
    /// An ELF binary's `PT_INTERP`: its dynamic loader.
    Elf,
}

/// The explanation after `exec: "PROGRAM": `.
struct Explained<'a>(&'a MissingInterpreter);

impl std::fmt::Display for Explained<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let missing = self.0;
        let (interpreter, script) = (Escaped(&missing.interpreter), Escaped(&missing.script));
        match missing.named_by {
            NamedBy::Shebang => write!(
                f,
                "the interpreter {interpreter} named on the #! line of {script} is not in the \
                 image{}",
                crlf_hint(&missing.interpreter)
            ),
            NamedBy::Elf => write!(
                f,
                "the dynamic loader {interpreter} that the ELF binary {script} needs is not in \
                 the image (a binary built for another C library or distribution?)"
            ),
        }
    }
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
        let (interpreter, named_by) = match shebang(&content) {
            Some(interpreter) => (interpreter, NamedBy::Shebang),
            None => (elf_interpreter(&content)?, NamedBy::Elf),
        };
        match read_image_file_start(&layers, &interpreter, HEAD_BYTES) {
            Ok(None) | Err(UserError::DanglingSymlink { .. }) => {
                return Some(MissingInterpreter {
                    program: program.clone(),
                    script,
                    interpreter,
                    named_by,
                });
            }
            // A dynamic loader that is there: its own failure is not this case.
            Ok(Some(_)) if named_by == NamedBy::Elf => return None,
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

/// The first bytes of the regular file `path` in the image, when it has one.
fn read(layers: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    read_image_file_start(layers, path, HEAD_BYTES)
        .ok()
        .flatten()
}

/// The program interpreter (`PT_INTERP`, the dynamic loader) an ELF file names, read from its
/// first bytes (`head`): 32- or 64-bit, either byte order (elf(5)).
fn elf_interpreter(head: &[u8]) -> Option<String> {
    const PT_INTERP: u64 = 3;
    if head.get(..4)? != b"\x7fELF" {
        return None;
    }
    let wide = match head.get(4)? {
        1 => false,
        2 => true,
        _ => return None,
    };
    let little = match head.get(5)? {
        1 => true,
        2 => false,
        _ => return None,
    };
    let number = |at: usize, n: usize| -> Option<u64> {
        let field = head.get(at..at.checked_add(n)?)?;
        let fold = |value: u64, byte: &u8| (value << 8) | u64::from(*byte);
        Some(if little {
            field.iter().rev().fold(0, fold)
        } else {
            field.iter().fold(0, fold)
        })
    };
    let word = |at: usize| number(at, if wide { 8 } else { 4 });
    let (phoff, phentsize, phnum) = if wide {
        (word(0x20)?, number(0x36, 2)?, number(0x38, 2)?)
    } else {
        (word(0x1c)?, number(0x2a, 2)?, number(0x2c, 2)?)
    };
    let (offset_at, size_at) = if wide { (0x08, 0x20) } else { (0x04, 0x10) };
    for index in 0..phnum {
        let header = usize::try_from(phoff.checked_add(index.checked_mul(phentsize)?)?).ok()?;
        if number(header, 4)? != PT_INTERP {
            continue;
        }
        let offset = usize::try_from(word(header.checked_add(offset_at)?)?).ok()?;
        let size = usize::try_from(word(header.checked_add(size_at)?)?).ok()?;
        let name = head.get(offset..offset.checked_add(size)?)?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        let name = String::from_utf8(name.to_vec()).ok()?;
        return name.starts_with('/').then_some(name);
    }
    None
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

    /// A minimal 64-bit little-endian ELF header with one `PT_INTERP` program header.
    fn elf64(interpreter: &[u8]) -> Vec<u8> {
        let mut elf = vec![0u8; 0x40 + 0x38];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let offset = elf.len() as u64;
        elf[0x40..0x44].copy_from_slice(&3u32.to_le_bytes()); // p_type PT_INTERP
        elf[0x48..0x50].copy_from_slice(&offset.to_le_bytes()); // p_offset
        elf[0x60..0x68].copy_from_slice(&(interpreter.len() as u64 + 1).to_le_bytes());
        elf.extend_from_slice(interpreter);
        elf.push(0);
        elf
    }

    #[test]
    fn an_elf_binarys_loader_is_read_from_its_program_headers() {
        assert_eq!(
            elf_interpreter(&elf64(b"/lib/ld-musl-x86_64.so.1")).as_deref(),
            Some("/lib/ld-musl-x86_64.so.1")
        );
        // A static binary (no PT_INTERP), a truncated header, not an ELF file.
        let mut static_elf = elf64(b"/x");
        static_elf[0x40] = 1;
        assert_eq!(elf_interpreter(&static_elf), None);
        assert_eq!(elf_interpreter(&elf64(b"/x")[..0x50]), None);
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn the_message_names_the_interpreter_and_the_script_escaped() {
        let err = MissingInterpreter {
            program: "/app".into(),
            script: "/app".into(),
            interpreter: "/lib64/ld-linux-x86-64.so.2".into(),
            named_by: NamedBy::Elf,
        };
        assert_eq!(
            err.to_string(),
            "exec: \"/app\": the dynamic loader /lib64/ld-linux-x86-64.so.2 that the ELF binary /app needs is not in the image (a binary built for another C library or distribution?)"
        );
        let err = MissingInterpreter {
            program: "/script".into(),
            script: "/script".into(),
            interpreter: "/bin/bash".into(),
            named_by: NamedBy::Shebang,
        };
        assert_eq!(
            err.to_string(),
            "exec: \"/script\": the interpreter /bin/bash named on the #! line of /script is not in the image"
        );
        let err = MissingInterpreter {
            program: "run".into(),
            script: "/usr/bin/run".into(),
            interpreter: "/bin/sh\r".into(),
            named_by: NamedBy::Shebang,
        };
        assert_eq!(
            err.to_string(),
            "exec: \"run\": the interpreter /bin/sh\\r named on the #! line of /usr/bin/run is not in the image (the line ends in a carriage return: the script has Windows (CRLF) line endings)"
        );
    }
}
