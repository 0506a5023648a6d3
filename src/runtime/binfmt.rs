//! Which platforms this machine can run a RUN step for: its own (natively), and every one a
//! user-mode emulator (Debian's `qemu-user-static`) is registered for in the kernel's
//! binfmt_misc, which then runs a foreign ELF binary through the emulator on `execve(2)`.
//!
//! kiln only reads `/proc/sys/fs/binfmt_misc`; it registers nothing (Debian's package does it
//! through systemd-binfmt or binfmt-support; `scripts/setup-emulation.sh` does it on a machine
//! without either). An emulator must be registered with the `F` (fix binary) flag: the kernel
//! then opens the interpreter once, at registration, so it runs inside a sandbox whose root
//! (the image's) has no `/usr/libexec/qemu-binfmt/...`. The reading goes through
//! [`BinfmtSource`], so the parsing and the decisions are tested on fixed texts, without root.

use crate::oci::Platform;
use std::io::Read as _;
use std::path::PathBuf;

/// Where the kernel's binfmt_misc lives.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// The most entries read, and the most bytes of each (an entry is a few hundred bytes).
const MAX_ENTRIES: usize = 512;
const MAX_ENTRY_BYTES: u64 = 4096;

/// How to get emulators, for messages.
const INSTALL_HINT: &str = "install Debian's qemu-user-static (`apt-get install \
    qemu-user-static`), which registers its emulators with the F flag (on a machine without \
    systemd-binfmt or binfmt-support: kiln's scripts/setup-emulation.sh)";

/// What binfmt_misc holds: the real one under `/proc`, or a fixed one in tests.
pub trait BinfmtSource {
    /// The content of `status` (`enabled` or `disabled`), or `None` when binfmt_misc is not
    /// mounted.
    fn status(&self) -> Option<String>;
    /// Every registered entry: its name and content (`register` and `status` left out).
    fn entries(&self) -> Vec<(String, String)>;
}

/// binfmt_misc as mounted at a directory ([`BINFMT_MISC`]).
#[derive(Debug, Clone)]
pub struct ProcBinfmt {
    pub dir: PathBuf,
}

impl Default for ProcBinfmt {
    /// [`BINFMT_MISC`], or `$KILN_BINFMT_MISC` (where binfmt_misc is mounted elsewhere, and
    /// for tests: a directory of fixed entries).
    fn default() -> Self {
        let dir = std::env::var_os("KILN_BINFMT_MISC")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(BINFMT_MISC), PathBuf::from);
        ProcBinfmt { dir }
    }
}

/// At most [`MAX_ENTRY_BYTES`] of a file, as text.
fn read_bounded(path: &std::path::Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_ENTRY_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

impl BinfmtSource for ProcBinfmt {
    fn status(&self) -> Option<String> {
        // Without the file system mounted, the directory exists but is empty.
        read_bounded(&self.dir.join("status")).map(|s| s.trim().to_string())
    }

    fn entries(&self) -> Vec<(String, String)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut entries: Vec<(String, String)> = dir
            .flatten()
            .take(MAX_ENTRIES)
            .filter_map(|entry| {
                let name = entry.file_name().to_str()?.to_string();
                if name == "register" || name == "status" {
                    return None;
                }
                Some((name, read_bounded(&entry.path())?))
            })
            .collect();
        entries.sort();
        entries
    }
}

/// One emulator registered for ELF binaries of some platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emulator {
    /// The entry's name (`qemu-aarch64`), printable (escaped).
    pub name: String,
    /// What it runs, newest variant first (`linux/arm/v7`, `linux/arm/v6`).
    pub platforms: Vec<Platform>,
    /// The interpreter path, printable (escaped).
    pub interpreter: String,
    pub enabled: bool,
    /// Registered with `F`: usable inside a sandbox.
    pub fix_binary: bool,
}

/// Whether a platform's binaries run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runnable {
    /// The machine's own platform (or one it runs as its own, such as 386 on amd64).
    Native,
    /// Through this emulator's interpreter (named by its binfmt_misc entry).
    Emulated { name: String, interpreter: String },
    /// Not here: why, and how to make it run.
    No(String),
}

/// What this machine runs: its platform and the emulators binfmt_misc has.
#[derive(Debug, Clone)]
pub struct Emulation {
    pub native: Platform,
    /// Newer variants of the native platform the CPU runs too (`linux/amd64/v3` on a CPU with
    /// AVX2), newest first.
    pub native_variants: Vec<Platform>,
    /// `None`: binfmt_misc is not mounted; else whether it is enabled.
    pub binfmt_enabled: Option<bool>,
    pub emulators: Vec<Emulator>,
}

impl Emulation {
    /// This machine, read from [`BINFMT_MISC`].
    pub fn detect() -> Emulation {
        Emulation::read_host(&ProcBinfmt::default())
    }

    /// This machine (its platform, and the variants its CPU runs), with `source`'s emulators.
    pub fn read_host(source: &dyn BinfmtSource) -> Emulation {
        let mut emulation = Emulation::read(source, Platform::host());
        emulation.native_variants = cpu_variants();
        emulation
    }

    /// What `source` says, on a machine of platform `native`.
    pub fn read(source: &dyn BinfmtSource, native: Platform) -> Emulation {
        let binfmt_enabled = source.status().map(|status| status == "enabled");
        let emulators = match binfmt_enabled {
            None => Vec::new(),
            Some(_) => source
                .entries()
                .iter()
                .filter_map(|(name, text)| parse_entry(name, text))
                .collect(),
        };
        Emulation {
            native: native.normalized(),
            native_variants: Vec::new(),
            binfmt_enabled,
            emulators,
        }
    }

    /// The platforms the machine runs natively: its own, and for amd64 also 386 (the kernel
    /// runs 32-bit x86 binaries itself).
    pub fn native_platforms(&self) -> Vec<Platform> {
        let mut platforms = vec![self.native.clone()];
        platforms.extend(self.native_variants.iter().cloned());
        if self.native.architecture == "amd64" {
            platforms.push(Platform::new(&self.native.os, "386", None));
        }
        platforms
    }

    /// Whether binaries of `platform` run here, and how.
    pub fn runnable(&self, platform: &Platform) -> Runnable {
        let wanted = platform.normalized();
        if self.native_platforms().iter().any(|p| p.accepts(&wanted)) {
            return Runnable::Native;
        }
        let cannot = |why: String| {
            Runnable::No(format!(
                "cannot run {wanted} binaries on this {} machine: {why}",
                self.native
            ))
        };
        if wanted.os != self.native.os {
            return cannot(format!(
                "its operating system is not {}, and no emulator runs another's",
                self.native.os
            ));
        }
        match self.binfmt_enabled {
            None => {
                return cannot(format!(
                    "binfmt_misc is not mounted (`mount -t binfmt_misc binfmt_misc \
                     {BINFMT_MISC}`), so no emulator is registered; then {INSTALL_HINT}"
                ));
            }
            Some(false) => {
                return cannot(format!(
                    "binfmt_misc is disabled (`echo 1 > {BINFMT_MISC}/status`)"
                ));
            }
            Some(true) => {}
        }
        let mut candidates = self
            .emulators
            .iter()
            .filter(|e| e.platforms.iter().any(|p| p.accepts(&wanted)));
        let mut unusable = Vec::new();
        for emulator in candidates.by_ref() {
            match (emulator.enabled, emulator.fix_binary) {
                (true, true) => {
                    return Runnable::Emulated {
                        name: emulator.name.clone(),
                        interpreter: emulator.interpreter.clone(),
                    };
                }
                (false, _) => unusable.push(format!(
                    "the emulator {} is registered but disabled (`echo 1 > \
                     {BINFMT_MISC}/{}`)",
                    emulator.name, emulator.name
                )),
                (true, false) => unusable.push(format!(
                    "the emulator {} is registered without the F flag, so the kernel looks \
                     for {} inside the image, where it is not; register it again with F \
                     ({INSTALL_HINT})",
                    emulator.name, emulator.interpreter
                )),
            }
        }
        if unusable.is_empty() {
            cannot(format!(
                "no emulator for it is registered in binfmt_misc; {INSTALL_HINT}"
            ))
        } else {
            cannot(unusable.join("; "))
        }
    }

    /// Every platform that runs here, natively first, then each emulator's (usable or not),
    /// with how: what `kiln info` lists.
    pub fn platforms(&self) -> Vec<(Platform, Runnable)> {
        let mut listed: Vec<(Platform, Runnable)> = self
            .native_platforms()
            .into_iter()
            .map(|p| (p, Runnable::Native))
            .collect();
        for emulator in &self.emulators {
            for platform in &emulator.platforms {
                if !listed.iter().any(|(p, _)| p == platform) {
                    listed.push((platform.clone(), self.runnable(platform)));
                }
            }
        }
        listed
    }
}

/// The x86-64 microarchitecture levels this CPU runs beyond the baseline (`linux/amd64/v2`..
/// `v4`, what BuildKit's worker reports as native), newest first.
fn cpu_variants() -> Vec<Platform> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v2 = has!("sse4.2") && has!("popcnt") && has!("ssse3") && has!("cmpxchg16b");
        let v3 = v2
            && has!("avx2")
            && has!("bmi1")
            && has!("bmi2")
            && has!("fma")
            && has!("movbe")
            && has!("lzcnt")
            && has!("f16c");
        let v4 = v3
            && has!("avx512f")
            && has!("avx512bw")
            && has!("avx512cd")
            && has!("avx512dq")
            && has!("avx512vl");
        [(v4, "v4"), (v3, "v3"), (v2, "v2")]
            .into_iter()
            .filter(|(level, _)| *level)
            .map(|(_, variant)| Platform::new("linux", "amd64", Some(variant)))
            .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// An entry's emulator, when the entry is enabled or not, matches ELF binaries of a known
/// platform (by the magic's class, byte order and machine) and is not just a
/// script interpreter.
fn parse_entry(name: &str, text: &str) -> Option<Emulator> {
    let mut enabled = false;
    let mut interpreter = None;
    let mut flags = "";
    let mut magic = None;
    let mut offset = 0usize;
    for line in text.lines() {
        match line.split_once(' ').map(|(k, v)| (k, v.trim())) {
            _ if line == "enabled" => enabled = true,
            Some(("interpreter", path)) => interpreter = Some(path),
            Some(("flags:", value)) => flags = value,
            Some(("offset", value)) => offset = value.parse().ok()?,
            Some(("magic", hex)) => magic = Some(decode_hex(hex)?),
            _ => {}
        }
    }
    let platforms = elf_platforms(&magic?, offset)?;
    let printable = |s: &str| s.escape_debug().to_string();
    Some(Emulator {
        name: printable(name),
        platforms,
        interpreter: printable(interpreter?),
        enabled,
        fix_binary: flags.contains('F'),
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The platforms of the ELF binaries a magic (matched at `offset`) selects: ELF class, byte
/// order and `e_machine`, the fields a binfmt_misc ELF magic spells out.
fn elf_platforms(magic: &[u8], offset: usize) -> Option<Vec<Platform>> {
    if offset != 0 || magic.get(..4)? != b"\x7fELF" {
        return None;
    }
    let (class, little) = (*magic.get(4)?, *magic.get(5)? == 1);
    let (low, high) = (*magic.get(18)?, *magic.get(19)?);
    let machine = if little {
        u16::from_le_bytes([low, high])
    } else {
        u16::from_be_bytes([low, high])
    };
    let linux = |arch: &str, variant: Option<&str>| Platform::new("linux", arch, variant);
    Some(match (class, little, machine) {
        (2, true, 62) => vec![linux("amd64", None)],
        (1, true, 3) => vec![linux("386", None)],
        (2, true, 183) => vec![linux("arm64", None)],
        (1, true, 40) => vec![linux("arm", Some("v7")), linux("arm", Some("v6"))],
        (2, true, 21) => vec![linux("ppc64le", None)],
        (2, false, 21) => vec![linux("ppc64", None)],
        (2, false, 22) => vec![linux("s390x", None)],
        (2, true, 243) => vec![linux("riscv64", None)],
        (2, true, 258) => vec![linux("loong64", None)],
        (1, false, 8) => vec![linux("mips", None)],
        (1, true, 8) => vec![linux("mipsle", None)],
        (2, false, 8) => vec![linux("mips64", None)],
        (2, true, 8) => vec![linux("mips64le", None)],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed binfmt_misc.
    struct Fixed {
        status: Option<&'static str>,
        entries: Vec<(&'static str, String)>,
    }

    impl BinfmtSource for Fixed {
        fn status(&self) -> Option<String> {
            self.status.map(str::to_string)
        }
        fn entries(&self) -> Vec<(String, String)> {
            self.entries
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect()
        }
    }

    const AARCH64_MAGIC: &str = "7f454c460201010000000000000000000200b700";
    const ARM_MAGIC: &str = "7f454c4601010100000000000000000002002800";
    const S390X_MAGIC: &str = "7f454c4602020100000000000000000000020016";

    fn entry(state: &str, interpreter: &str, flags: &str, magic: &str) -> String {
        format!(
            "{state}\ninterpreter {interpreter}\nflags: {flags}\noffset 0\nmagic {magic}\n\
             mask ffffffffffffff00fffffffffffffffffeffffff\n"
        )
    }

    fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn registered_emulators_run_their_platforms() {
        let source = Fixed {
            status: Some("enabled"),
            entries: vec![
                (
                    "qemu-aarch64",
                    entry(
                        "enabled",
                        "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
                        "POF",
                        AARCH64_MAGIC,
                    ),
                ),
                (
                    "qemu-arm",
                    entry(
                        "enabled",
                        "/usr/libexec/qemu-binfmt/arm-binfmt-P",
                        "POCF",
                        ARM_MAGIC,
                    ),
                ),
                (
                    "qemu-s390x",
                    entry("disabled", "/usr/bin/qemu-s390x-static", "F", S390X_MAGIC),
                ),
                (
                    "python3.11",
                    entry("enabled", "/usr/bin/python3.11", "", "550d0d0a"),
                ),
            ],
        };
        let emulation = Emulation::read(&source, amd64());
        assert_eq!(emulation.runnable(&amd64()), Runnable::Native);
        assert_eq!(emulation.runnable(&platform("linux/386")), Runnable::Native);
        assert_eq!(
            emulation.runnable(&platform("linux/arm64/v8")),
            Runnable::Emulated {
                name: "qemu-aarch64".into(),
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into()
            }
        );
        for arm in ["linux/arm", "linux/arm/v6", "linux/arm/v5"] {
            assert!(
                matches!(emulation.runnable(&platform(arm)), Runnable::Emulated { ref name, .. } if name == "qemu-arm"),
                "{arm}"
            );
        }
        let Runnable::No(why) = emulation.runnable(&platform("linux/s390x")) else {
            panic!("a disabled emulator runs nothing");
        };
        assert!(
            why.contains("qemu-s390x is registered but disabled"),
            "{why}"
        );
        let Runnable::No(why) = emulation.runnable(&platform("linux/riscv64")) else {
            panic!("nothing runs riscv64");
        };
        assert!(
            why.starts_with(
                "cannot run linux/riscv64 binaries on this linux/amd64 machine: no emulator"
            ) && why.contains("apt-get install qemu-user-static"),
            "{why}"
        );
        assert!(matches!(
            emulation.runnable(&platform("windows/amd64")),
            Runnable::No(_)
        ));
        let listed: Vec<String> = emulation
            .platforms()
            .iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert_eq!(
            listed,
            [
                "linux/amd64",
                "linux/386",
                "linux/arm64",
                "linux/arm/v7",
                "linux/arm/v6",
                "linux/s390x"
            ]
        );
    }

    #[test]
    fn an_emulator_without_the_fix_binary_flag_is_named_as_unusable() {
        let source = Fixed {
            status: Some("enabled"),
            entries: vec![(
                "qemu-aarch64",
                entry("enabled", "/usr/bin/qemu-aarch64-static", "", AARCH64_MAGIC),
            )],
        };
        let Runnable::No(why) =
            Emulation::read(&source, amd64()).runnable(&platform("linux/arm64"))
        else {
            panic!("not usable in a sandbox");
        };
        assert!(why.contains("without the F flag"), "{why}");
    }

    #[test]
    fn without_binfmt_misc_mounted_the_message_says_how_to_mount_it() {
        let source = Fixed {
            status: None,
            entries: Vec::new(),
        };
        let emulation = Emulation::read(&source, amd64());
        let Runnable::No(why) = emulation.runnable(&platform("linux/arm64")) else {
            panic!("nothing is registered");
        };
        assert!(
            why.contains("binfmt_misc is not mounted") && why.contains("mount -t binfmt_misc"),
            "{why}"
        );
        assert_eq!(emulation.platforms().len(), 2);
        let disabled = Fixed {
            status: Some("disabled"),
            entries: Vec::new(),
        };
        let Runnable::No(why) =
            Emulation::read(&disabled, amd64()).runnable(&platform("linux/arm64"))
        else {
            panic!("disabled");
        };
        assert!(why.contains("binfmt_misc is disabled"), "{why}");
    }

    #[test]
    fn entries_that_are_not_elf_or_not_known_are_left_out() {
        assert_eq!(
            parse_entry("x", "enabled\ninterpreter /a\nmagic 7f45"),
            None
        );
        assert_eq!(parse_entry("x", "enabled\ninterpreter /a\nmagic zz"), None);
        // An ELF magic at another offset, or of an unknown machine.
        let odd = entry("enabled", "/a", "F", AARCH64_MAGIC).replace("offset 0", "offset 2");
        assert_eq!(parse_entry("x", &odd), None);
        let unknown = entry(
            "enabled",
            "/a",
            "F",
            "7f454c460201010000000000000000000200ff00",
        );
        assert_eq!(parse_entry("x", &unknown), None);
        // Names and paths from the kernel are printed escaped.
        let named = parse_entry(
            "q\u{1b}[2J",
            &entry("enabled", "/a\u{7}", "F", AARCH64_MAGIC),
        )
        .expect("an emulator");
        assert_eq!(named.name, "q\\u{1b}[2J");
        assert_eq!(named.interpreter, "/a\\u{7}");
    }
}
