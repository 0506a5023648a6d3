//! `session`: kiln's ssh-agent against OpenSSH's own client tools (`ssh-keygen`, `ssh-add`), and
//! the errors `--ssh` key files get. Skips with a notice when openssh-client is absent (a failure
//! under `CI=true`; `scripts/test` installs it).

use crate::support;
use kiln::error::chain;
use kiln::session::{SshAgents, SshSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Tools {
    keygen: PathBuf,
    add: PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        keygen: support::tool("ssh-keygen")?,
        add: support::tool("ssh-add")?,
    })
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run an openssh tool");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A new key pair at `dir/name` (and `.pub`), without a passphrase unless one is given.
fn keygen(tools: &Tools, dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    run(Command::new(&tools.keygen)
        .args(["-q", "-t", kind, "-C", name, "-N", passphrase, "-f"])
        .arg(&path));
    path
}

/// The key's SHA256 fingerprint as `ssh-keygen -l` prints it (`SHA256:...`).
fn fingerprint(tools: &Tools, public: &Path) -> String {
    let output = run(Command::new(&tools.keygen).arg("-lf").arg(public));
    let text = String::from_utf8(output.stdout).unwrap();
    let fingerprint = text.split_whitespace().nth(1).unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{text}");
    fingerprint
}

fn start(id: &str, keys: &[&Path]) -> SshAgents {
    let paths: Vec<&str> = keys.iter().map(|p| p.to_str().unwrap()).collect();
    let spec = SshSpec::parse(&format!("{id}={}", paths.join(","))).unwrap();
    SshAgents::start(vec![spec]).unwrap_or_else(|e| panic!("{}", chain(&e)))
}

#[test]
fn ssh_add_lists_the_keys_of_kilns_agent() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ed = keygen(&tools, dir.path(), "ed", "ed25519", "");
    let ec = keygen(&tools, dir.path(), "ec", "ecdsa", "");
    let agents = start("git", &[&ed, &ec]);
    let socket = agents.socket("git").unwrap();

    let output = run(Command::new(&tools.add)
        .arg("-l")
        .env("SSH_AUTH_SOCK", socket));
    let listed = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    let ed_fingerprint = fingerprint(&tools, &ed.with_extension("pub"));
    assert!(lines[0].contains(&ed_fingerprint), "{listed}");
    assert!(lines[0].ends_with("ed (ED25519)"), "{listed}");
    assert!(lines[1].contains(&fingerprint(&tools, &ec.with_extension("pub"))));

    // The agent is read-only: a build cannot remove the keys (ssh-add fails, the keys stay).
    let removed = Command::new(&tools.add)
        .arg("-D")
        .env("SSH_AUTH_SOCK", socket)
        .output()
        .unwrap();
    assert!(!removed.status.success());
    let output = run(Command::new(&tools.add)
        .arg("-l")
        .env("SSH_AUTH_SOCK", socket));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), listed);

    let socket = socket.to_path_buf();
    drop(agents);
    assert!(!socket.exists());
}

#[test]
fn signatures_made_through_kilns_agent_verify_with_openssh() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("message");
    std::fs::write(&message, b"issue 13").unwrap();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = keygen(&tools, dir.path(), kind, kind, "");
        let public = key.with_extension("pub");
        let agents = start("default", &[&key]);
        // Given only the public half, `ssh-keygen -Y sign` asks the agent to sign (rsa-sha2-512
        // for an RSA key).
        run(Command::new(&tools.keygen)
            .args(["-Y", "sign", "-n", "file", "-f"])
            .arg(&public)
            .arg(&message)
            .env("SSH_AUTH_SOCK", agents.socket("default").unwrap()));
        let signature = message.with_extension("sig");
        let message_file = std::fs::File::open(&message).unwrap();
        run(Command::new(&tools.keygen)
            .args(["-Y", "check-novalidate", "-n", "file", "-s"])
            .arg(&signature)
            .stdin(message_file));
        std::fs::remove_file(&signature).unwrap();
    }
}

#[test]
fn a_passphrase_protected_key_is_an_error_naming_the_file() {
    let Some(tools) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = keygen(&tools, dir.path(), "locked", "ed25519", "a passphrase");
    let spec = SshSpec::parse(&format!("git={}", key.display())).unwrap();
    let err = SshAgents::start(vec![spec]).unwrap_err();
    let text = chain(&err);
    assert!(
        text.starts_with(&format!(
            "ssh agent \"git\": cannot use {}: ",
            key.display()
        )),
        "{text}"
    );
    assert!(text.contains("passphrase-protected"), "{text}");
}
