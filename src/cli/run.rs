//! `kiln run`: a container of a stored image, in the foreground, with docker's flags, exit codes
//! (the container's; 125 when kiln fails, 126/127 when the command cannot be executed) and signal
//! proxying (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to kiln reach the
//! container's pid 1, as `docker run --sig-proxy` does).

use super::term::outln;
use anyhow::Context as _;
use clap::Args;
use kiln::container::lifecycle;
use kiln::container::{Container, ContainerError, RunOptions, env_entry, env_file, parse_volume};
use kiln::runtime::cgroup::{Limits, parse_memory};
use kiln::runtime::network::{HostEntry, NetworkMode, parse_publish};
use kiln::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// docker's exit code when the daemon (here: kiln) fails.
const KILN_FAILED: u8 = 125;
/// What a process killed with SIGKILL (here: by the OOM killer) exits with.
const OOM_EXIT: u8 = 137;

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Run the container in the background and print its ID.
    #[arg(short, long)]
    detach: bool,
    /// The container's name (default: a random `adjective_surname`).
    #[arg(long)]
    name: Option<String>,
    /// Restart policy of a detached container: `no`, `on-failure[:N]`, `always`,
    /// `unless-stopped`.
    #[arg(long, default_value = "no", value_name = "POLICY")]
    restart: String,
    /// The signal that stops the container (default: the image's STOPSIGNAL, else SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds to wait after the stop signal (or, in the foreground, a forwarded SIGTERM or
    /// SIGINT) before SIGKILL (default 10).
    #[arg(long, value_name = "SECONDS")]
    stop_timeout: Option<u32>,
    /// Log driver options of a detached container's json-file log: `max-size=SIZE` (default
    /// 100m), `max-file=N` (default 2).
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opts: Vec<String>,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Keep standard input open and pass it to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (`K=V`, or `K` to take its value from kiln's environment).
    #[arg(short, long = "env", value_name = "K[=V]")]
    env: Vec<String>,
    /// Read environment variables from a file (one `K=V` or `K` per line, `#` comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// Bind-mount a host path: `HOST:CONTAINER[:ro|rw]`, both absolute.
    #[arg(short, long = "volume", value_name = "HOST:CTR[:ro]")]
    volumes: Vec<String>,
    /// The working directory inside the container (created when missing).
    #[arg(short, long)]
    workdir: Option<String>,
    /// The user: `name|uid[:group|gid]`, resolved from the image's /etc/passwd and /etc/group.
    #[arg(short, long)]
    user: Option<String>,
    /// The network: `bridge` or `default` (a private network with outbound access), `host`
    /// (the host's) or `none` (only loopback).
    #[arg(long, default_value = "default", value_parser = ["default", "bridge", "host", "none"])]
    network: String,
    /// Publish a container's port on the host: `[IP:][HOST:]CTR[/tcp|/udp]` (repeatable; no
    /// HOST picks a free port).
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]CTR[/PROTO]")]
    publish: Vec<String>,
    /// Add a line to /etc/hosts: `NAME:IP` (`host-gateway` is the host; repeatable).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_hosts: Vec<String>,
    /// A DNS server for /etc/resolv.conf instead of the host's (repeatable).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// The container's hostname (default: the first 12 digits of its id).
    #[arg(long)]
    hostname: Option<String>,
    /// Replace the image's ENTRYPOINT (and drop its CMD); "" removes it.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Memory limit (`64m`, `1g`...).
    #[arg(short, long)]
    memory: Option<String>,
    /// The most processes at once (0 or -1: unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// CPU time as a number of CPUs (`0.5`, `1.5`).
    #[arg(long)]
    cpus: Option<f64>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Run a tiny init as pid 1 that reaps zombies and forwards signals.
    #[arg(long)]
    init: bool,
    /// Security options: `no-new-privileges[=true|false]` (kiln sets no_new_privs by default).
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opts: Vec<String>,
    /// The platform's image of a multi-platform image (`OS/ARCH[/VARIANT]`; default: this
    /// machine's); a single-platform image must be of it. A foreign one runs under the
    /// emulator binfmt_misc has for it.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    #[command(flatten)]
    isolation: super::IsolationArgs,
    /// Pull the image before running: `missing` (default: only when the store lacks it),
    /// `always`, or `never`.
    #[arg(
        long,
        value_enum,
        value_name = "missing|always|never",
        default_value = "missing"
    )]
    pull: PullPolicy,
    #[command(flatten)]
    registry: super::registry::RegistryFlags,
    /// The image (name or ID).
    image: String,
    /// The command and its arguments (default: the image's ENTRYPOINT and CMD).
    #[arg(allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the container and returns its exit code (125 with a message when kiln fails).
pub fn run(root: &Path, args: RunArgs) -> ExitCode {
    match run_container(root, args) {
        Ok(code) => code,
        Err(err) => {
            let code = err
                .downcast_ref::<ContainerError>()
                .map_or(i32::from(KILN_FAILED), ContainerError::exit_code);
            super::report::print(&err);
            exit_code(code)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(KILN_FAILED))
}

/// `docker run --pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull when the store has no image of that name.
    Missing,
    /// Pull before every run.
    Always,
    /// Never pull: a missing image is an error.
    Never,
}

/// The image to run, pulled first as `--pull` says (as `docker run`: "Unable to find image …
/// locally", then the pull's progress, all on stderr).
fn resolve_or_pull(store: &Store, args: &RunArgs) -> anyhow::Result<kiln::store::StoredImage> {
    let platform = args
        .platform
        .as_deref()
        .map(kiln::oci::Platform::parse_normalized)
        .transpose()?;
    let platform = platform.as_ref();
    let pull = |store: &Store| {
        super::registry::pull_image(
            store,
            &args.image,
            args.platform.as_deref(),
            &args.registry,
            false,
            super::registry::StatusTo::Stderr,
        )
    };
    match args.pull {
        PullPolicy::Never => {}
        PullPolicy::Always => {
            pull(store)?;
        }
        PullPolicy::Missing => match store.resolve_platform(&args.image, platform) {
            Err(kiln::store::StoreError::NotFound(_))
                if kiln::oci::reference::Reference::parse_normalized(&args.image).is_ok() =>
            {
                // Docker names it as it would store it (`busybox:latest`).
                let wanted = kiln::store::ImageName::parse(&args.image)
                    .map_or_else(|_| args.image.clone(), |name| name.familiar());
                let _ = super::term::errln!("Unable to find image '{wanted}' locally");
                pull(store)?;
            }
            resolved => return Ok(resolved?),
        },
    }
    Ok(store.resolve_platform(&args.image, platform)?)
}

fn run_container(root: &Path, args: RunArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(root)?;
    let image = resolve_or_pull(&store, &args)?;
    // An image of another architecture runs only through an emulator: say which one is missing
    // rather than let the kernel answer "exec format error".
    if let Some(image_platform) = kiln::store::config_platform(&image.config_bytes)
        && let kiln::runtime::binfmt::Runnable::No(why) =
            kiln::runtime::binfmt::Emulation::detect().runnable(&image_platform)
    {
        anyhow::bail!("{why}");
    }
    let options = options(&args)?;
    if args.detach {
        let record = lifecycle::create(&store, &image, &args.image, &options)?;
        super::containers::launch_supervisor(root, &record.id, None)?;
        outln!("{}", record.id)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut container = Container::create(&store, &image, &args.image, &options)?;

    let streams = super::attach::Streams::of_kiln()?;
    let stdio = streams.stdio(args.tty, args.interactive)?;
    let proxied = super::attach::block_proxied()?;
    let mut sandbox = container.start(stdio)?;
    let grace = Duration::from_secs(u64::from(
        options
            .stop_timeout
            .unwrap_or(lifecycle::DEFAULT_STOP_TIMEOUT),
    ));
    super::attach::forward_signals(proxied, sandbox.handle(), Some(grace));

    if let Some(master) = sandbox.take_terminal() {
        streams.relay(&master, args.interactive)?;
    }
    let outcome = sandbox.wait()?;
    container.set_exit_code(outcome.exit_code());
    let ending = container.finish()?;
    if let Some(limit) = ending.oom_killed {
        super::term::errln!(
            "kiln: container killed: out of memory (limit {})",
            memory_size(limit)
        )?;
        return Ok(ExitCode::from(OOM_EXIT));
    }
    Ok(exit_code(outcome.exit_code()))
}

/// `64 MiB` for a whole number of MiB, else the bytes.
fn memory_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The command line as [`RunOptions`].
fn options(args: &RunArgs) -> anyhow::Result<RunOptions> {
    let lookup = |name: &str| std::env::var(name).ok();
    let mut env = Vec::new();
    // docker reads the env files first; `-e` values then override them.
    for path in &args.env_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read env file {}", path.display()))?;
        env.extend(env_file(&text, lookup)?);
    }
    for value in &args.env {
        env.extend(env_entry(value, lookup)?);
    }
    let volumes = args
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut no_new_privileges = true;
    for opt in &args.security_opts {
        no_new_privileges = match opt.as_str() {
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => true,
            "no-new-privileges=false" | "no-new-privileges:false" => false,
            other => anyhow::bail!(
                "unsupported --security-opt {other:?}: kiln knows no-new-privileges[=true|false]"
            ),
        };
    }
    let limits = Limits {
        memory: args.memory.as_deref().map(parse_memory).transpose()?,
        pids: args
            .pids_limit
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0),
        cpus: args.cpus,
    };
    Ok(RunOptions {
        entrypoint: args.entrypoint.clone(),
        args: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        network: match args.network.as_str() {
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            _ => NetworkMode::Private,
        },
        publish: args
            .publish
            .iter()
            .map(|spec| parse_publish(spec))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect(),
        add_hosts: args
            .add_hosts
            .iter()
            .map(|spec| HostEntry::parse(spec))
            .collect::<Result<Vec<_>, _>>()?,
        dns: args.dns.clone(),
        volumes,
        read_only: args.read_only,
        limits,
        init: args.init,
        tty: args.tty,
        no_new_privileges,
        remove: args.rm,
        isolation: args.isolation.isolation,
        name: args.name.clone(),
        restart: args.restart.parse()?,
        stop_signal: args
            .stop_signal
            .as_deref()
            .map(|name| lifecycle::parse_signal(name).map(|_| name.to_string()))
            .transpose()?,
        stop_timeout: args.stop_timeout,
        log: kiln::container::logs::LogLimits::parse(&args.log_opts).map_err(anyhow::Error::msg)?,
    })
}

/// `kiln create`: a container made as `kiln run` would, not started; prints its ID.
pub fn create(root: &Path, args: RunArgs) -> ExitCode {
    let created = (|| -> anyhow::Result<()> {
        let store = Store::open(root)?;
        let image = resolve_or_pull(&store, &args)?;
        let options = options(&args)?;
        let record = lifecycle::create(&store, &image, &args.image, &options)?;
        outln!("{}", record.id)?;
        Ok(())
    })();
    match created {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            super::report::print(&err);
            ExitCode::from(KILN_FAILED)
        }
    }
}
