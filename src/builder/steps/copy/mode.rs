//! `--chmod` values, as BuildKit's Dockerfile front end reads them (dockerfile2llb `dispatchCopy`):
//! an octal number up to 07777, else (Dockerfile 1.14 on) a symbolic mode as chmod(1) describes,
//! read like BSD setmode(3) with a umask of 0 (tonistiigi/dchapes-mode's `Parse`).
//!
//! An octal mode replaces the permission, setuid, setgid and sticky bits (fsutil `copyFileInfo`);
//! a symbolic one is applied to the source file's mode.

/// The user, group and other permission classes and their special bits.
const USER: u32 = 0o4700;
const GROUP: u32 = 0o2070;
const OTHER: u32 = 0o0007;
/// setmode's `standardBits`: everything `a` and `=` touch (the sticky bit only by name, `t`).
const STANDARD: u32 = 0o6777;
const STICKY: u32 = 0o1000;
const SET_ID: u32 = 0o6000;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chmod {
    /// An absolute mode (`0755`, `4755`).
    Octal(u32),
    /// Symbolic clauses (`u+x,go-w`), applied in order.
    Symbolic(Vec<Clause>),
}

/// One comma-separated clause: who it is about and its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The class bits named (`u`, `g`, `o`, `a`), 0 for none (then every class).
    who: u32,
    actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Action {
    op: u8,
    /// The `rwxXst` and `ugo` letters after the operator, in order.
    perms: Vec<u8>,
}

impl Chmod {
    /// Parses a `--chmod` value; the error is BuildKit's message.
    pub(crate) fn parse(value: &str) -> Result<Chmod, String> {
        let non_octal = || {
            format!(
                "invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777"
            )
        };
        if !value.is_empty() && value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return match u32::from_str_radix(value, 8) {
                Ok(mode) if mode <= 0o7777 => Ok(Chmod::Octal(mode)),
                _ => Err(non_octal()),
            };
        }
        // A value that starts like a number but is not octal is reported as one (BuildKit
        // returns its octal message when the parse error is a number error).
        if value.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
            return Err(non_octal());
        }
        parse_symbolic(value)
            .map(Chmod::Symbolic)
            .ok_or_else(|| format!("invalid chmod parameter: '{value}': invalid syntax"))
    }

    /// The mode (07777 bits) a file of mode `mode` gets; `is_dir` matters for `X`.
    pub(crate) fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(octal) => *octal,
            Chmod::Symbolic(clauses) => {
                let original = mode & 0o7777;
                let mut mode = original;
                for clause in clauses {
                    for action in &clause.actions {
                        mode = action.apply(clause.who, mode, original, is_dir);
                    }
                }
                mode
            }
        }
    }
}

/// The grammar of chmod(1): `[ugoa]*([-+=]([rwxXst]*|[ugo]))+` clauses joined by `,`.
fn parse_symbolic(value: &str) -> Option<Vec<Clause>> {
    let mut clauses = Vec::new();
    for text in value.split(',') {
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut who = 0;
        while let Some(&b) = bytes.get(i) {
            who |= match b {
                b'u' => USER,
                b'g' => GROUP,
                b'o' => OTHER,
                b'a' => STANDARD,
                _ => break,
            };
            i += 1;
        }
        let mut actions = Vec::new();
        while let Some(&op) = bytes.get(i) {
            if !matches!(op, b'+' | b'-' | b'=') {
                return None;
            }
            i += 1;
            let mut perms = Vec::new();
            while let Some(&b) = bytes.get(i) {
                if !b"rwxXstugo".contains(&b) {
                    break;
                }
                perms.push(b);
                i += 1;
            }
            actions.push(Action { op, perms });
        }
        if actions.is_empty() {
            return None;
        }
        clauses.push(Clause { who, actions });
    }
    Some(clauses)
}

impl Action {
    /// Applies this action for the classes `who` to `mode`; `original` is the mode before any
    /// clause (what `X` looks at, as in setmode).
    fn apply(&self, who: u32, mut mode: u32, original: u32, is_dir: bool) -> u32 {
        // Set-id and sticky letters do nothing when only `o` is named.
        let not_only_other = who == 0 || who & !OTHER != 0;
        let mut target = if who == 0 { 0o7777 } else { who };
        let mut bits = 0;
        let mut cleared = false;
        for &letter in &self.perms {
            match letter {
                b'r' => bits |= READ,
                b'w' => bits |= WRITE,
                b'x' => bits |= EXEC,
                // setmode honours `X` only with `+`.
                b'X' if self.op == b'+' && (is_dir || original & EXEC != 0) => bits |= EXEC,
                b's' if not_only_other => bits |= SET_ID,
                b't' if not_only_other => {
                    target |= STICKY;
                    bits |= STICKY;
                }
                b'u' | b'g' | b'o' => {
                    self.flush(who, &mut mode, &mut bits, target, &mut cleared);
                    let shift = match letter {
                        b'u' => 6,
                        b'g' => 3,
                        _ => 0,
                    };
                    let value = (mode >> shift) & 0o7;
                    let copied = (value << 6 | value << 3 | value) & target & 0o777;
                    match self.op {
                        b'+' => mode |= copied,
                        b'-' => mode &= !copied,
                        _ => mode = (mode & !(target & 0o777)) | copied,
                    }
                }
                _ => {}
            }
        }
        if bits != 0 || (self.op == b'=' && !cleared) {
            self.flush(who, &mut mode, &mut bits, target, &mut cleared);
        }
        mode
    }

    /// Applies the permission `bits` gathered so far to the classes in `target`; `=` first
    /// clears what it is about, once.
    fn flush(&self, who: u32, mode: &mut u32, bits: &mut u32, target: u32, cleared: &mut bool) {
        match self.op {
            b'+' => *mode |= *bits & target,
            b'-' => *mode &= !(*bits & target),
            _ => {
                if !*cleared {
                    // Every class but the sticky bit when no class is named, else the named
                    // classes (the sticky bit too once `t` named it).
                    *mode &= !(if who == 0 { STANDARD } else { target });
                    *cleared = true;
                }
                *mode |= *bits & target;
            }
        }
        *bits = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_values_replace_the_mode_and_bad_ones_get_buildkits_message() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("04755"), Ok(Chmod::Octal(0o4755)));
        assert_eq!(Chmod::parse("0").unwrap().apply(0o7777, false), 0);
        assert_eq!(Chmod::parse("4755").unwrap().apply(0o644, false), 0o4755);
        for bad in ["10000", "0999", "8", "17777", "7a"] {
            let error = Chmod::parse(bad).unwrap_err();
            assert!(
                error.contains("it should be octal string and between 0 and 07777"),
                "{bad}: {error}"
            );
        }
        for bad in ["", ",", "q+r", "u", "go", "u+x,", "+z", "u+x,,g+w"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn symbolic_modes_follow_chmod_1() {
        // (mode string, starting mode, is_dir, expected) as chmod(1) with umask 0 gives.
        for (text, mode, is_dir, expected) in [
            ("u+x", 0o644, false, 0o744),
            ("go-w", 0o666, false, 0o644),
            ("a=rx", 0o777, false, 0o555),
            ("=rw,+X", 0o600, false, 0o666),
            ("=rw,+X", 0o600, true, 0o777),
            ("+X", 0o644, false, 0o644),
            ("+X", 0o744, false, 0o755),
            ("u=rwx,go=u-w", 0, false, 0o755),
            ("g=u", 0o740, false, 0o770),
            ("o=", 0o777, false, 0o770),
            ("u+s", 0o755, false, 0o4755),
            ("g+s", 0o755, true, 0o2755),
            ("o+s", 0o755, false, 0o755),
            ("+t", 0o777, true, 0o1777),
            ("o+t", 0o777, true, 0o777),
            ("a-x", 0o4755, false, 0o4644),
            ("u-s,g+w", 0o4755, false, 0o775),
            ("=", 0o1755, false, 0o1000),
            ("u=r,g=,o=w", 0o777, false, 0o402),
            ("+x", 0o600, false, 0o711),
            ("ug+rw-x", 0o711, false, 0o661),
        ] {
            let chmod = Chmod::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                chmod.apply(mode, is_dir),
                expected,
                "{text} on {mode:o} (dir {is_dir}): got {:o}",
                chmod.apply(mode, is_dir)
            );
        }
    }
}
