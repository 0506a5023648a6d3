//! The seccomp filter every workload runs under: a deny list of the system calls Docker's default
//! profile (moby `profiles/seccomp/default.json`) refuses a container holding Docker's default
//! capabilities, compiled to classic BPF in the parent so the child only has to install it.
//!
//! Docker's profile is an allow list whose default action is `EPERM`; kiln denies the dangerous
//! calls explicitly and allows the rest, which is the same for everything a build or `kiln run`
//! does, and needs no list of every harmless system call per architecture.
//!
//! Why not the `seccompiler` crate: its programs start with an architecture check that kills the
//! process on a mismatch and then compare syscall numbers only. That is right for its allow lists,
//! but wrong for a deny list on x86_64: x32 system calls arrive with `AUDIT_ARCH_X86_64` and the
//! number OR-ed with `__X32_SYSCALL_BIT`, so `mount | 0x40000000` would pass every comparison
//! (the classic deny-list bypass, seccomp(2) "Caveats"), and i386 binaries (`int 0x80`, still found
//! in `i386/*` images) would be killed instead of filtered. This module handles both:
//!
//! * native calls: the deny list, the `clone` namespace-flag check and `clone3` → `ENOSYS`;
//! * x32 calls (number ≥ `__X32_SYSCALL_BIT`): `ENOSYS`, as on kernels built without x32;
//! * i386 calls on x86_64: the same deny list with the i386 numbers (`syscall_32.tbl`);
//! * any other architecture: `SECCOMP_RET_KILL_PROCESS`.

use libc::sock_filter;

/// `AUDIT_ARCH_X86_64` (linux/audit.h): `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_I386`: `EM_386 | __AUDIT_ARCH_LE`.
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(any(test, target_arch = "aarch64"))]
pub(crate) const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
/// `__X32_SYSCALL_BIT`: x32 system call numbers carry this bit on x86_64.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The `clone` flags that create namespaces; Docker's profile allows `clone` only when
/// `flags & NAMESPACE_FLAGS == 0` (its `SCMP_CMP_MASKED_EQ` 2114060288).
pub(crate) const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u32;

/// `AF_VSOCK`: Docker's profile refuses `socket(AF_VSOCK, ..)`, which would reach the hypervisor.
const AF_VSOCK: u32 = 40;

// Offsets into `struct seccomp_data` (linux/seccomp.h): int nr; u32 arch; u64 ip; u64 args[6].
// Only little-endian architectures are supported, so the low half of args[0] is at 16.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;

// Classic BPF opcodes (linux/bpf_common.h, linux/filter.h).
const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// The filter's verdicts.
pub(crate) const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
/// `EPERM`, Docker's `defaultErrnoRet`.
pub(crate) const RET_EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
/// `ENOSYS`: makes libc fall back from `clone3` to `clone`, whose flags can be inspected (Docker's
/// profile does the same: seccomp cannot read `clone3`'s flags, they are behind a pointer).
pub(crate) const RET_ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
/// A foreign architecture the filter does not know the numbers of.
pub(crate) const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

/// One system call ABI: its audit architecture and the numbers of the calls the filter treats.
struct Abi {
    audit_arch: u32,
    /// Numbers at or above this are another ABI multiplexed on this one (x32 on x86_64).
    foreign_from: Option<u32>,
    clone: u32,
    clone3: u32,
    socket: u32,
    denied: &'static [u32],
}

/// The native ABI of the build target, and the compat ABIs the kernel may also run.
#[cfg(target_arch = "x86_64")]
fn abis() -> Option<(Abi, Vec<Abi>)> {
    let native = Abi {
        audit_arch: AUDIT_ARCH_X86_64,
        foreign_from: Some(X32_SYSCALL_BIT),
        clone: libc::SYS_clone as u32,
        clone3: libc::SYS_clone3 as u32,
        socket: libc::SYS_socket as u32,
        denied: X86_64_DENIED,
    };
    let i386 = Abi {
        audit_arch: AUDIT_ARCH_I386,
        foreign_from: None,
        clone: 120,
        clone3: 435,
        socket: 359,
        denied: I386_DENIED,
    };
    Some((native, vec![i386]))
}

/// The native ABI of the build target; aarch64's 32-bit compat ABI is killed (see the module doc).
#[cfg(target_arch = "aarch64")]
fn abis() -> Option<(Abi, Vec<Abi>)> {
    let native = Abi {
        audit_arch: AUDIT_ARCH_AARCH64,
        foreign_from: None,
        clone: libc::SYS_clone as u32,
        clone3: libc::SYS_clone3 as u32,
        socket: libc::SYS_socket as u32,
        denied: AARCH64_DENIED,
    };
    Some((native, Vec::new()))
}

/// Other architectures have no table yet: [`program`] returns `None` and sandboxes refuse to start.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn abis() -> Option<(Abi, Vec<Abi>)> {
    None
}

/// Calls refused with `EPERM` on x86_64: those Docker's profile allows only with a capability
/// outside its default set (`CAP_SYS_ADMIN`, `CAP_SYS_MODULE`, `CAP_SYS_BOOT`, `CAP_SYS_TIME`,
/// `CAP_SYS_PTRACE` for kcmp/pidfd_getfd/process_madvise, `CAP_SYS_RAWIO`, `CAP_SYS_NICE`,
/// `CAP_SYSLOG`, `CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_PACCT`, `CAP_DAC_READ_SEARCH`,
/// `CAP_SYS_TTY_CONFIG`) or not at all (keyrings, kexec, swap, userfaultfd, obsolete calls).
/// `ptrace` and `process_vm_*` stay allowed, as Docker does on kernels ≥ 4.8.
#[cfg(target_arch = "x86_64")]
const X86_64_DENIED: &[u32] = &[
    libc::SYS_acct as u32,
    libc::SYS_add_key as u32,
    libc::SYS_bpf as u32,
    libc::SYS_clock_settime as u32,
    libc::SYS_delete_module as u32,
    libc::SYS_fanotify_init as u32,
    libc::SYS_finit_module as u32,
    libc::SYS_fsconfig as u32,
    libc::SYS_fsmount as u32,
    libc::SYS_fsopen as u32,
    libc::SYS_fspick as u32,
    libc::SYS_get_mempolicy as u32,
    libc::SYS_init_module as u32,
    libc::SYS_ioperm as u32,
    libc::SYS_iopl as u32,
    libc::SYS_kcmp as u32,
    libc::SYS_kexec_file_load as u32,
    libc::SYS_kexec_load as u32,
    libc::SYS_keyctl as u32,
    libc::SYS_lookup_dcookie as u32,
    libc::SYS_mbind as u32,
    libc::SYS_mount as u32,
    libc::SYS_mount_setattr as u32,
    libc::SYS_move_mount as u32,
    libc::SYS_move_pages as u32,
    libc::SYS_nfsservctl as u32,
    libc::SYS_open_by_handle_at as u32,
    libc::SYS_open_tree as u32,
    libc::SYS_perf_event_open as u32,
    libc::SYS_pidfd_getfd as u32,
    libc::SYS_pivot_root as u32,
    libc::SYS_process_madvise as u32,
    libc::SYS_quotactl as u32,
    libc::SYS_quotactl_fd as u32,
    libc::SYS_reboot as u32,
    libc::SYS_request_key as u32,
    libc::SYS_set_mempolicy as u32,
    libc::SYS_set_mempolicy_home_node as u32,
    libc::SYS_setdomainname as u32,
    libc::SYS_sethostname as u32,
    libc::SYS_setns as u32,
    libc::SYS_settimeofday as u32,
    libc::SYS_swapoff as u32,
    libc::SYS_swapon as u32,
    libc::SYS_sysfs as u32,
    libc::SYS__sysctl as u32,
    libc::SYS_syslog as u32,
    libc::SYS_umount2 as u32,
    libc::SYS_unshare as u32,
    libc::SYS_uselib as u32,
    libc::SYS_userfaultfd as u32,
    libc::SYS_ustat as u32,
    libc::SYS_vhangup as u32,
];

/// The same calls by their i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl; the libc crate
/// only has the build target's numbers), plus i386's own `umount`, `stime`, `clock_settime64`,
/// `vm86` and `vm86old`.
#[cfg(target_arch = "x86_64")]
const I386_DENIED: &[u32] = &[
    51,  // acct
    286, // add_key
    357, // bpf
    264, // clock_settime
    404, // clock_settime64
    129, // delete_module
    338, // fanotify_init
    350, // finit_module
    431, // fsconfig
    432, // fsmount
    430, // fsopen
    433, // fspick
    275, // get_mempolicy
    128, // init_module
    101, // ioperm
    110, // iopl
    349, // kcmp
    283, // kexec_load
    288, // keyctl
    253, // lookup_dcookie
    274, // mbind
    21,  // mount
    442, // mount_setattr
    429, // move_mount
    317, // move_pages
    169, // nfsservctl
    342, // open_by_handle_at
    428, // open_tree
    336, // perf_event_open
    438, // pidfd_getfd
    217, // pivot_root
    440, // process_madvise
    131, // quotactl
    443, // quotactl_fd
    88,  // reboot
    287, // request_key
    276, // set_mempolicy
    450, // set_mempolicy_home_node
    121, // setdomainname
    74,  // sethostname
    346, // setns
    79,  // settimeofday
    25,  // stime
    115, // swapoff
    87,  // swapon
    135, // sysfs
    149, // _sysctl
    103, // syslog
    22,  // umount
    52,  // umount2
    310, // unshare
    86,  // uselib
    374, // userfaultfd
    62,  // ustat
    111, // vhangup
    166, // vm86
    113, // vm86old
];

/// The x86_64 list minus the calls aarch64 does not have (ioperm, iopl, sysfs, _sysctl, uselib,
/// ustat).
#[cfg(target_arch = "aarch64")]
const AARCH64_DENIED: &[u32] = &[
    libc::SYS_acct as u32,
    libc::SYS_add_key as u32,
    libc::SYS_bpf as u32,
    libc::SYS_clock_settime as u32,
    libc::SYS_delete_module as u32,
    libc::SYS_fanotify_init as u32,
    libc::SYS_finit_module as u32,
    libc::SYS_fsconfig as u32,
    libc::SYS_fsmount as u32,
    libc::SYS_fsopen as u32,
    libc::SYS_fspick as u32,
    libc::SYS_get_mempolicy as u32,
    libc::SYS_init_module as u32,
    libc::SYS_kcmp as u32,
    libc::SYS_kexec_file_load as u32,
    libc::SYS_kexec_load as u32,
    libc::SYS_keyctl as u32,
    libc::SYS_lookup_dcookie as u32,
    libc::SYS_mbind as u32,
    libc::SYS_mount as u32,
    libc::SYS_mount_setattr as u32,
    libc::SYS_move_mount as u32,
    libc::SYS_move_pages as u32,
    libc::SYS_nfsservctl as u32,
    libc::SYS_open_by_handle_at as u32,
    libc::SYS_open_tree as u32,
    libc::SYS_perf_event_open as u32,
    libc::SYS_pidfd_getfd as u32,
    libc::SYS_pivot_root as u32,
    libc::SYS_process_madvise as u32,
    libc::SYS_quotactl as u32,
    libc::SYS_quotactl_fd as u32,
    libc::SYS_reboot as u32,
    libc::SYS_request_key as u32,
    libc::SYS_set_mempolicy as u32,
    libc::SYS_set_mempolicy_home_node as u32,
    libc::SYS_setdomainname as u32,
    libc::SYS_sethostname as u32,
    libc::SYS_setns as u32,
    libc::SYS_settimeofday as u32,
    libc::SYS_swapoff as u32,
    libc::SYS_swapon as u32,
    libc::SYS_syslog as u32,
    libc::SYS_umount2 as u32,
    libc::SYS_unshare as u32,
    libc::SYS_userfaultfd as u32,
    libc::SYS_vhangup as u32,
];

/// A jump destination while assembling: the next instruction or a label bound later (classic BPF
/// only jumps forward, by at most 255 instructions).
#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

/// A tiny assembler: instructions with symbolic forward jumps, resolved by [`Asm::finish`].
#[derive(Default)]
struct Asm {
    code: Vec<(u16, To, To, u32)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        if let Some(slot) = self.labels.get_mut(label) {
            *slot = Some(self.code.len());
        }
    }

    fn load(&mut self, offset: u32) {
        self.code.push((BPF_LD_W_ABS, To::Next, To::Next, offset));
    }

    fn jump(&mut self, op: u16, k: u32, jt: To, jf: To) {
        self.code.push((op, jt, jf, k));
    }

    fn ret(&mut self, verdict: u32) {
        self.code.push((BPF_RET_K, To::Next, To::Next, verdict));
    }

    /// The program, or `None` when a jump is backwards, unbound or longer than 255 (a bug in the
    /// layout below; the unit tests build the program for the target architecture).
    fn finish(self) -> Option<Vec<sock_filter>> {
        let labels = self.labels;
        let offset = |at: usize, to: To| -> Option<u8> {
            match to {
                To::Next => Some(0),
                To::Label(label) => {
                    let target = (*labels.get(label)?)?;
                    u8::try_from(target.checked_sub(at + 1)?).ok()
                }
            }
        };
        self.code
            .iter()
            .enumerate()
            .map(|(at, &(code, jt, jf, k))| {
                Some(sock_filter {
                    code,
                    jt: offset(at, jt)?,
                    jf: offset(at, jf)?,
                    k,
                })
            })
            .collect()
    }
}

/// Appends the checks for one ABI (the arch word is already known to match).
fn abi_block(asm: &mut Asm, abi: &Abi) {
    let eperm = asm.label();
    let enosys = asm.label();
    let clone = asm.label();
    let clone_allowed = asm.label();
    let socket = asm.label();
    let socket_allowed = asm.label();
    asm.load(DATA_NR);
    if let Some(from) = abi.foreign_from {
        asm.jump(BPF_JGE_K, from, To::Label(enosys), To::Next);
    }
    asm.jump(BPF_JEQ_K, abi.clone, To::Label(clone), To::Next);
    asm.jump(BPF_JEQ_K, abi.clone3, To::Label(enosys), To::Next);
    asm.jump(BPF_JEQ_K, abi.socket, To::Label(socket), To::Next);
    for &nr in abi.denied {
        asm.jump(BPF_JEQ_K, nr, To::Label(eperm), To::Next);
    }
    asm.ret(RET_ALLOW);
    asm.bind(eperm);
    asm.ret(RET_EPERM);
    asm.bind(enosys);
    asm.ret(RET_ENOSYS);
    // clone(flags, ...): flags is the first argument on x86 and arm64 (s390 differs, unsupported).
    asm.bind(clone);
    asm.load(DATA_ARG0_LOW);
    asm.jump(
        BPF_JSET_K,
        NAMESPACE_FLAGS,
        To::Next,
        To::Label(clone_allowed),
    );
    asm.ret(RET_EPERM);
    asm.bind(clone_allowed);
    asm.ret(RET_ALLOW);
    asm.bind(socket);
    asm.load(DATA_ARG0_LOW);
    asm.jump(BPF_JEQ_K, AF_VSOCK, To::Next, To::Label(socket_allowed));
    asm.ret(RET_EPERM);
    asm.bind(socket_allowed);
    asm.ret(RET_ALLOW);
}

/// The filter for the build target's architecture, or `None` when kiln has no system call table
/// for it.
pub(crate) fn program() -> Option<Vec<sock_filter>> {
    let (native, compat) = abis()?;
    let mut asm = Asm::default();
    let native_label = asm.label();
    let compat_labels: Vec<usize> = compat.iter().map(|_| asm.label()).collect();
    asm.load(DATA_ARCH);
    asm.jump(
        BPF_JEQ_K,
        native.audit_arch,
        To::Label(native_label),
        To::Next,
    );
    for (abi, &label) in compat.iter().zip(&compat_labels) {
        asm.jump(BPF_JEQ_K, abi.audit_arch, To::Label(label), To::Next);
    }
    asm.ret(RET_KILL);
    asm.bind(native_label);
    abi_block(&mut asm, &native);
    for (abi, &label) in compat.iter().zip(&compat_labels) {
        asm.bind(label);
        abi_block(&mut asm, abi);
    }
    asm.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program on one `seccomp_data` (a minimal interpreter for the opcodes
    /// the filter uses).
    fn run(program: &[sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[16..24].copy_from_slice(&arg0.to_le_bytes());
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let insn = program[pc];
            pc += 1;
            match insn.code {
                BPF_LD_W_ABS => {
                    let at = insn.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                BPF_JEQ_K | BPF_JGE_K | BPF_JSET_K => {
                    let taken = match insn.code {
                        BPF_JEQ_K => acc == insn.k,
                        BPF_JGE_K => acc >= insn.k,
                        _ => acc & insn.k != 0,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                BPF_RET_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_verdicts() {
        let program = program().expect("x86_64 has a table");
        let native = |nr: i64, arg0: u64| run(&program, AUDIT_ARCH_X86_64, nr as u32, arg0);
        let newns = libc::CLONE_NEWNS as u64;
        let fork_flags =
            (libc::SIGCHLD | libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM) as u64;
        let cases: &[(&str, u32, u32)] = &[
            ("read", native(libc::SYS_read, 0), RET_ALLOW),
            ("execve", native(libc::SYS_execve, 0), RET_ALLOW),
            ("ptrace", native(libc::SYS_ptrace, 0), RET_ALLOW),
            ("chroot", native(libc::SYS_chroot, 0), RET_ALLOW),
            ("mount", native(libc::SYS_mount, 0), RET_EPERM),
            ("umount2", native(libc::SYS_umount2, 0), RET_EPERM),
            ("pivot_root", native(libc::SYS_pivot_root, 0), RET_EPERM),
            ("unshare", native(libc::SYS_unshare, 0), RET_EPERM),
            ("setns", native(libc::SYS_setns, 0), RET_EPERM),
            ("keyctl", native(libc::SYS_keyctl, 0), RET_EPERM),
            ("bpf", native(libc::SYS_bpf, 0), RET_EPERM),
            ("kexec_load", native(libc::SYS_kexec_load, 0), RET_EPERM),
            ("reboot", native(libc::SYS_reboot, 0), RET_EPERM),
            ("open_tree", native(libc::SYS_open_tree, 0), RET_EPERM),
            (
                "vhangup (last in the list)",
                native(libc::SYS_vhangup, 0),
                RET_EPERM,
            ),
            ("clone fork", native(libc::SYS_clone, fork_flags), RET_ALLOW),
            (
                "clone thread",
                native(libc::SYS_clone, thread_flags),
                RET_ALLOW,
            ),
            (
                "clone newns",
                native(libc::SYS_clone, newns | fork_flags),
                RET_EPERM,
            ),
            (
                "clone newuser",
                native(libc::SYS_clone, libc::CLONE_NEWUSER as u64),
                RET_EPERM,
            ),
            ("clone3", native(libc::SYS_clone3, 0), RET_ENOSYS),
            (
                "socket inet",
                native(libc::SYS_socket, libc::AF_INET as u64),
                RET_ALLOW,
            ),
            ("socket vsock", native(libc::SYS_socket, 40), RET_EPERM),
            (
                "x32 mount",
                run(
                    &program,
                    AUDIT_ARCH_X86_64,
                    X32_SYSCALL_BIT | libc::SYS_mount as u32,
                    0,
                ),
                RET_ENOSYS,
            ),
            (
                "x32 read",
                run(&program, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, 0),
                RET_ENOSYS,
            ),
            ("i386 read", run(&program, AUDIT_ARCH_I386, 3, 0), RET_ALLOW),
            (
                "i386 mount",
                run(&program, AUDIT_ARCH_I386, 21, 0),
                RET_EPERM,
            ),
            (
                "i386 unshare",
                run(&program, AUDIT_ARCH_I386, 310, 0),
                RET_EPERM,
            ),
            (
                "i386 vm86old",
                run(&program, AUDIT_ARCH_I386, 113, 0),
                RET_EPERM,
            ),
            (
                "i386 clone newpid",
                run(&program, AUDIT_ARCH_I386, 120, libc::CLONE_NEWPID as u64),
                RET_EPERM,
            ),
            (
                "i386 clone fork",
                run(&program, AUDIT_ARCH_I386, 120, libc::SIGCHLD as u64),
                RET_ALLOW,
            ),
            (
                "i386 clone3",
                run(&program, AUDIT_ARCH_I386, 435, 0),
                RET_ENOSYS,
            ),
            (
                "aarch64 on x86_64",
                run(&program, AUDIT_ARCH_AARCH64, 0, 0),
                RET_KILL,
            ),
        ];
        let failures: Vec<String> = cases
            .iter()
            .filter(|(_, got, want)| got != want)
            .map(|(name, got, want)| format!("{name}: got {got:#x}, want {want:#x}"))
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 32);
    }

    #[test]
    fn namespace_mask_is_dockers() {
        assert_eq!(NAMESPACE_FLAGS, 2_114_060_288);
    }

    #[test]
    fn every_jump_is_in_range() {
        let program = program().expect("the build target has a table");
        for (at, insn) in program.iter().enumerate() {
            if insn.code == BPF_RET_K || insn.code == BPF_LD_W_ABS {
                continue;
            }
            let last = at + 1 + usize::from(insn.jt.max(insn.jf));
            assert!(last < program.len(), "instruction {at} jumps past the end");
        }
        assert_eq!(program.last().map(|insn| insn.code), Some(BPF_RET_K));
        assert!(program.len() < usize::from(u16::MAX));
    }
}
