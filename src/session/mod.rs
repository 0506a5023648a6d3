//! What the build's client lends a build (issue 13): secrets (`--secret`) and SSH agents
//! (`--ssh`), which RUN steps reach through `--mount=type=secret` and `--mount=type=ssh`.
//!
//! BuildKit calls these the session's attachables: the client serves them to the daemon over the
//! session (`session/secrets/secretsprovider`, `session/sshforward/sshprovider`) and the daemon
//! asks for one when a step mounts it. kiln runs in-process, so there is no session to cross:
//! [`Secrets`] reads a secret's bytes when a step asks for them, and [`SshAgents`] gives each
//! agent id a unix socket on the host that a RUN step binds in. The flag syntax is buildx's
//! (`util/buildflags/secrets.go`, `ssh.go`); [`secrets`] and [`ssh`] document its rules.

pub mod secrets;
pub mod ssh;

mod agent;

pub use secrets::{MAX_SECRET_SIZE, SecretBytes, SecretSource, SecretSpec, Secrets};
pub use ssh::{SshAgents, SshSpec};

use std::io;
use std::path::PathBuf;

use crate::error::{Cause, Reason};

/// What can go wrong with a flag, a secret or an agent. Messages name ids, paths and variable
/// names, never a secret's bytes or key material.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A `--secret` value that does not parse.
    #[error("invalid --secret {}", shown(.flag))]
    SecretFlag {
        flag: String,
        #[source]
        reason: Reason,
    },
    /// A `--ssh` value that does not parse.
    #[error("invalid --ssh {}", shown(.flag))]
    SshFlag {
        flag: String,
        #[source]
        reason: Reason,
    },
    /// A secret's file cannot be read.
    #[error("cannot read secret {id:?} from {}", .path.display())]
    ReadSecret {
        id: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A secret is over BuildKit's size limit ([`MAX_SECRET_SIZE`]).
    #[error("secret {id:?} is too big: the limit is {limit} bytes")]
    SecretTooBig { id: String, limit: usize },
    /// Two `--ssh` flags with one id (BuildKit refuses them too).
    #[error("duplicate ssh agent id {id:?}")]
    DuplicateSshId { id: String },
    /// A `--ssh` id without paths when `$SSH_AUTH_SOCK` is not set.
    #[error(
        "ssh agent {id:?} needs SSH_AUTH_SOCK, which is not set: start an ssh-agent or give a \
         socket or key path (--ssh {id}=PATH)"
    )]
    NoAuthSock { id: String },
    /// The paths of one `--ssh` id that cannot serve as one agent.
    #[error("ssh agent {id:?}")]
    SshPaths {
        id: String,
        #[source]
        reason: Reason,
    },
    /// A path of a `--ssh` flag that is neither a usable socket nor a usable private key.
    #[error("ssh agent {id:?}: cannot use {}", .path.display())]
    SshPath {
        id: String,
        path: PathBuf,
        #[source]
        reason: Cause,
    },
    /// kiln's own agent cannot be started.
    #[error("cannot start the ssh agent for {id:?}")]
    StartAgent {
        id: String,
        #[source]
        source: io::Error,
    },
}

/// A flag's value as an error shows it: quoted and cut short, since it comes from outside.
fn shown(flag: &str) -> String {
    const MAX: usize = 200;
    match flag.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}...", &flag[..end]),
        None => format!("{flag:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_flag_is_cut_short_in_errors() {
        let flag = "x".repeat(10_000);
        let err = SessionError::SecretFlag {
            flag,
            reason: Reason::new("bad"),
        };
        assert!(err.to_string().len() < 300, "{err}");
    }
}
