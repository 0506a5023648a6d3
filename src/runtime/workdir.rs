//! Why the working directory could not be made, in words: the sandbox creates it (`mkdir -p`
//! inside the root, after the kernel file systems are mounted), and a raw errno ("ELOOP: Too
//! many symbolic links encountered" for `WORKDIR /proc/self/fd/3`) does not say what is wrong.

use nix::errno::Errno;

/// The kernel file systems the sandbox mounts over the image, and what they are.
const KERNEL_MOUNTS: [(&str, &str); 2] = [
    ("/proc", "the kernel's process information (procfs)"),
    ("/sys", "the kernel's sysfs"),
];

/// Why creating the working directory `cwd` (cleaned, absolute) failed with `errno`.
pub(crate) fn reason(cwd: &str, errno: Errno) -> String {
    for (mount, what) in KERNEL_MOUNTS {
        let under = cwd
            .strip_prefix(mount)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if under {
            return format!(
                "{mount} is where the sandbox mounts {what}, not a directory of the image; a \
                 working directory (WORKDIR, -w) must be a directory inside the image"
            );
        }
    }
    match errno {
        Errno::ENOTDIR => {
            "a part of the path is a file in the image, not a directory; a working directory \
             (WORKDIR, -w) must be a directory inside the image"
                .to_string()
        }
        Errno::ELOOP => "the path goes through a symbolic link loop (or more than 40 links)".into(),
        Errno::EEXIST => "the path names a file in the image, not a directory".into(),
        Errno::EROFS => "the root file system is read-only and the directory does not exist".into(),
        other => format!("{} ({other:?})", other.desc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_mount_is_named_whatever_the_errno() {
        let proc = reason("/proc/self/fd/3", Errno::ELOOP);
        assert!(
            proc.starts_with("/proc is where the sandbox mounts"),
            "{proc}"
        );
        assert!(
            proc.contains("must be a directory inside the image"),
            "{proc}"
        );
        assert!(reason("/sys", Errno::EACCES).starts_with("/sys is where"));
        // Only the mount and what is below it.
        assert_eq!(
            reason("/process/x", Errno::ENOTDIR),
            "a part of the path is a file in the image, not a directory; a working directory \
             (WORKDIR, -w) must be a directory inside the image"
        );
        assert_eq!(reason("/w", Errno::EIO), "I/O error (EIO)");
    }
}
