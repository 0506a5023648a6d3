//! `kiln pull`, `push`, `login` and `logout`, with docker's arguments and output, over
//! [`kiln::registry`]. Blobs show as one progress bar each on a terminal, as one line each when
//! done otherwise.

use super::term::{err, errln, outln};
use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::oci::Digest;
use kiln::oci::Platform;
use kiln::oci::reference::{DEFAULT_DOMAIN, Reference};
use kiln::registry::{
    BlobEvent, Client, ClientOptions, Credentials, DockerConfig, RegistryError, TransferProgress,
    auth::config_dir, pull, push,
};
use kiln::store::Store;
use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;
use std::sync::Mutex;

/// Flags every registry command takes.
#[derive(Debug, Args)]
pub struct RegistryFlags {
    /// Speak plain HTTP to this registry (`host[:port]`; loopback registries always are).
    /// Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
}

impl RegistryFlags {
    /// The client options these flags (and the environment) ask for.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            insecure_registries: self.insecure_registries.clone(),
            ..ClientOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `NAME[:TAG|@DIGEST]`.
    name: String,
    /// The platform to pull from a multi-platform image (`os/arch[/variant]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print only the image's name.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push, by its name: `NAME[:TAG]` says where it goes.
    name: String,
    /// Print only the pushed manifest's digest.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`host[:port]`; default: Docker Hub).
    server: Option<String>,
    #[arg(short, long)]
    username: Option<String>,
    /// The password (visible to other users in the process list: prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`; default: Docker Hub).
    server: Option<String>,
}

fn parse_reference(name: &str) -> anyhow::Result<Reference> {
    Reference::parse_normalized(name).with_context(|| format!("invalid reference {name:?}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the registry client's threads")
}

/// `docker pull`.
pub fn pull_command(root: &Path, args: PullArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let reference = pull_image(
        &store,
        &args.name,
        args.platform.as_deref(),
        &args.registry,
        args.quiet,
        StatusTo::Stdout,
    )?;
    if args.quiet {
        outln!("{reference}")?;
    }
    Ok(())
}

/// Where a pull's closing status lines (`Digest: …`, `Status: …`, the reference) go: `kiln
/// pull` prints them to stdout, as `docker pull`; `kiln run` pulling a missing image to stderr,
/// as `docker run` does, since stdout is the container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusTo {
    Stdout,
    Stderr,
}

/// Pulls `name` (of `platform`, default this machine's) into `store` with docker pull's
/// progress, and returns the reference it pulled.
pub fn pull_image(
    store: &Store,
    name: &str,
    platform: Option<&str>,
    registry: &RegistryFlags,
    quiet: bool,
    status: StatusTo,
) -> anyhow::Result<Reference> {
    let reference = parse_reference(name)?.with_default_tag();
    let platform = match platform {
        Some(text) => Platform::parse_normalized(text)?,
        None => Platform::host(),
    };
    let client = Client::new(registry.client_options())?;
    let progress = BlobProgress::new(quiet);
    if !quiet {
        let what = reference.tag().or(reference.digest()).unwrap_or("latest");
        errln!("{what}: Pulling from {}", reference.path())?;
    }
    let pulled = runtime()?.block_on(pull(&client, store, &reference, &platform, &progress));
    progress.finish();
    let image = pulled?;
    if !quiet {
        // What the reference resolves to: of a multi-platform image, its index.
        let digest = image.index.as_ref().unwrap_or(&image.manifest_digest);
        let lines =
            format!("Digest: {digest}\nStatus: Downloaded image for {reference}\n{reference}");
        match status {
            StatusTo::Stdout => outln!("{lines}")?,
            StatusTo::Stderr => errln!("{lines}")?,
        }
    }
    Ok(reference)
}

/// `docker push`.
pub fn push_command(root: &Path, args: PushArgs) -> anyhow::Result<()> {
    let reference = parse_reference(&args.name)?.with_default_tag();
    let store = Store::open(root)?;
    let client = Client::new(args.registry.client_options())?;
    let progress = BlobProgress::new(args.quiet);
    if !args.quiet {
        errln!(
            "The push refers to repository [{}/{}]",
            reference.domain(),
            reference.path()
        )?;
    }
    let pushed = runtime()?.block_on(push(
        &client,
        &store,
        &args.name,
        &reference,
        &kiln::cache::remote::origins(),
        &progress,
    ));
    progress.finish();
    let digest = pushed?;
    if args.quiet {
        outln!("{digest}")?;
    } else {
        let size = store
            .blobs()
            .size(&digest)
            .map_or_else(|_| String::new(), |s| format!(" size: {s}"));
        outln!(
            "{}: digest: {digest}{size}",
            reference.tag().unwrap_or("latest")
        )?;
    }
    Ok(())
}

/// `host[:port]` of a login server as docker accepts it (`https://host/v1/`, `host`); Docker
/// Hub's names are `docker.io`.
fn server_name(server: Option<&str>) -> String {
    let Some(server) = server else {
        return DEFAULT_DOMAIN.to_string();
    };
    let host = server
        .strip_prefix("https://")
        .or_else(|| server.strip_prefix("http://"))
        .unwrap_or(server);
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => DEFAULT_DOMAIN.to_string(),
        other => other.to_string(),
    }
}

/// `docker login`: checks the credentials against the registry, then stores them in docker's
/// `config.json` (through its credential helper when one is configured).
pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let server = server_name(args.server.as_deref());
    let username = match args.username {
        Some(user) => user,
        None => prompt("Username: ", false)?,
    };
    let password = match (args.password, args.password_stdin) {
        (Some(password), _) => password,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => prompt("Password: ", true)?,
    };
    if username.is_empty() || password.is_empty() {
        bail!("login to {server} needs a user name and a password");
    }
    let credentials = Credentials { username, password };
    let mut options = args.registry.client_options();
    options
        .credentials
        .insert(server.clone(), credentials.clone());
    let client = Client::new(options)?;
    match runtime()?.block_on(client.check_login(&server)) {
        Ok(()) => {}
        Err(RegistryError::Unauthorized { message, .. }) => {
            bail!(
                "login to {server} failed: the registry refused the user name or password ({message})"
            )
        }
        Err(err) => return Err(err.into()),
    }
    let mut config = DockerConfig::load(&config_dir(None))?;
    config.store_credentials(&server, &credentials)?;
    outln!("Login Succeeded")?;
    Ok(())
}

/// `docker logout`.
pub fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let server = server_name(args.server.as_deref());
    let mut config = DockerConfig::load(&config_dir(None))?;
    if config.erase_credentials(&server)? {
        outln!("Removing login credentials for {server}")?;
    } else {
        outln!("Not logged in to {server}")?;
    }
    Ok(())
}

/// Reads one line from the terminal after `label` (on stderr); with `secret`, without echo.
fn prompt(label: &str, secret: bool) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to ask for the {label:?}: pass -u USER and --password-stdin");
    }
    err!("{label}")?;
    // termios(3): clearing ECHO keeps the typed password off the screen; restored afterwards.
    let saved = if secret { tcgetattr(&stdin).ok() } else { None };
    if let Some(saved) = &saved {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, saved);
        errln!()?;
    }
    read.context("cannot read from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Per-blob progress: a bar each on a terminal, a line each when done otherwise.
pub(super) struct BlobProgress {
    look: Look,
}

enum Look {
    Quiet,
    Lines,
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<Digest, ProgressBar>>,
    },
}

impl BlobProgress {
    pub(super) fn new(quiet: bool) -> BlobProgress {
        let look = if quiet {
            Look::Quiet
        } else if super::term::stderr_is_terminal() {
            Look::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            Look::Lines
        };
        BlobProgress { look }
    }

    pub(super) fn finish(&self) {
        if let Look::Bars { multi, .. } = &self.look {
            let _ = multi.clear();
        }
    }
}

const BAR: &str = "{prefix}: {msg:>22} [{bar:30}] {bytes}/{total_bytes}";

impl TransferProgress for BlobProgress {
    fn blob(&self, digest: &Digest, event: BlobEvent) {
        match &self.look {
            Look::Quiet => {}
            Look::Lines => {
                if let BlobEvent::Finished(status) = event {
                    // A broken stderr must not fail the transfer.
                    let _ = errln!("{}: {status}", digest.short());
                }
            }
            Look::Bars { multi, bars } => {
                let mut bars = bars
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    BlobEvent::Started { size } => {
                        let bar = multi.add(ProgressBar::new(size));
                        if let Ok(style) = ProgressStyle::with_template(BAR) {
                            bar.set_style(style.progress_chars("=> "));
                        }
                        bar.set_prefix(digest.short().to_string());
                        bar.set_message("Waiting");
                        bars.insert(digest.clone(), bar);
                    }
                    BlobEvent::Progress { bytes } => {
                        if let Some(bar) = bars.get(digest) {
                            bar.set_message("Transferring");
                            bar.set_position(bytes);
                        }
                    }
                    BlobEvent::Finished(status) => {
                        if let Some(bar) = bars.get(digest) {
                            bar.finish_with_message(status.to_string());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_server_names() {
        for (given, expected) in [
            (None, "docker.io"),
            (Some("https://index.docker.io/v1/"), "docker.io"),
            (Some("registry-1.docker.io"), "docker.io"),
            (Some("127.0.0.1:5000"), "127.0.0.1:5000"),
            (Some("http://reg.example:5000/v2/"), "reg.example:5000"),
        ] {
            assert_eq!(server_name(given), expected, "{given:?}");
        }
    }

    #[test]
    fn bar_template_is_valid() {
        assert!(ProgressStyle::with_template(BAR).is_ok());
    }
}
