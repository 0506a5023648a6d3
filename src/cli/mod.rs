//! Command-line interface: argument parsing (clap) and one module per subcommand. Errors are
//! `anyhow` here; front-end errors that carry a span are printed as a snippet.

mod archive;
mod attach;
mod build;
mod call;
mod container_fs;
mod containers;
mod exec;
mod images;
mod info;
mod interrupt;
mod parse;
mod progress;
mod registry;
mod report;
mod rootless;
mod run;
mod template;
mod term;

use clap::{Parser, Subcommand};
use kiln::store::Store;
use std::path::PathBuf;
use std::process::ExitCode;

pub use report::{located, unlocated};

/// kiln builds container images from Dockerfiles.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// The image store (an OCI image layout); default: /var/lib/kiln for root, else
    /// $XDG_DATA_HOME/kiln (~/.local/share/kiln).
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image from a Dockerfile.
    Build(build::BuildArgs),
    /// Parse a Dockerfile and print its syntax tree.
    Parse(parse::ParseArgs),
    /// List images.
    Images(images::ImagesArgs),
    /// Create a tag TARGET that refers to the image SOURCE.
    Tag(images::TagArgs),
    /// Remove one or more images.
    Rmi(images::RmiArgs),
    /// Show low-level information on containers or images (JSON).
    Inspect(containers::InspectCommandArgs),
    /// Show the history of an image.
    History(images::HistoryArgs),
    /// Remove unused images, blobs, layer snapshots and stale staging files.
    Prune(images::PruneArgs),
    /// Show the store's disk usage.
    Df(images::DfArgs),
    /// Run a command in a new container.
    Run(run::RunArgs),
    /// Create an image from a root filesystem tar.
    Import(archive::ImportArgs),
    /// Write a container's filesystem (or an image's flattened root filesystem) as a tar.
    Export(archive::ExportArgs),
    /// Write images to a tar archive (docker's format or an OCI layout).
    Save(archive::SaveArgs),
    /// Load images from a tar archive (docker's format or an OCI layout).
    Load(archive::LoadArgs),
    /// Download an image from a registry.
    Pull(registry::PullArgs),
    /// Upload an image to a registry.
    Push(registry::PushArgs),
    /// Log in to a registry (stores the credentials in docker's config.json).
    Login(registry::LoginArgs),
    /// Log out from a registry.
    Logout(registry::LogoutArgs),
    /// Show this machine's platform and the platforms it runs (natively or emulated).
    Info(info::InfoArgs),
    /// List the changes to a container's files.
    Diff(container_fs::DiffArgs),
    /// Create a new image from a container's changes.
    Commit(container_fs::CommitArgs),
    /// Copy files between a container and the host.
    Cp(container_fs::CpArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Display the running processes of a container.
    Top(exec::TopArgs),
    /// Create a new container (not started).
    Create(run::RunArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Fetch the logs of a container.
    Logs(containers::LogsArgs),
    /// Stop one or more running containers.
    Stop(containers::StopArgs),
    /// Kill one or more running containers.
    Kill(containers::KillArgs),
    /// Start one or more stopped containers.
    Start(containers::StartArgs),
    /// Restart one or more containers.
    Restart(containers::RestartArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(containers::WaitArgs),
    /// Remove one or more containers.
    Rm(containers::RmArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Manage containers.
    Container(containers::ContainerArgs),
    /// A detached container's supervisor (started by `run -d` and `start`).
    #[command(hide = true)]
    ContainerSupervise(containers::SuperviseArgs),
}

impl Command {
    /// Whether the command enters kiln's rootless namespace, and warns without one.
    fn rootless_need(&self) -> rootless::Need {
        use rootless::Need;
        match self {
            Command::Parse(_) | Command::Login(_) | Command::Logout(_) | Command::Info(_) => {
                Need::None
            }
            // A rootless container's namespaces belong to the user namespace of the kiln that
            // ran it, which exec joins from the initial one (where its owner has every
            // capability over it); a fresh namespace of its own could not.
            Command::Exec(_) | Command::Top(_) => Need::None,
            Command::Build(_)
            | Command::Run(_)
            | Command::Create(_)
            | Command::Start(_)
            | Command::Restart(_)
            | Command::ContainerSupervise(_)
            | Command::Import(_)
            | Command::Load(_)
            | Command::Pull(_)
            | Command::Commit(_)
            | Command::Cp(_) => Need::Owners,
            Command::Images(_)
            | Command::Tag(_)
            | Command::Rmi(_)
            | Command::Inspect(_)
            | Command::History(_)
            | Command::Prune(_)
            | Command::Df(_)
            | Command::Export(_)
            | Command::Save(_)
            | Command::Push(_)
            | Command::Diff(_)
            | Command::Ps(_)
            | Command::Logs(_)
            | Command::Stop(_)
            | Command::Kill(_)
            | Command::Wait(_)
            | Command::Rm(_)
            | Command::Rename(_) => Need::Quiet,
            Command::Container(args) => args.rootless_need(),
        }
    }
}

/// `--isolation`, shared by `kiln build` (its RUN steps) and `kiln run`.
#[derive(Debug, clap::Args)]
pub struct IsolationArgs {
    /// How RUN steps and containers are isolated: `sandbox` (default) or `chroot` (no
    /// namespaces; read --help for its risks).
    #[arg(
        long,
        env = kiln::runtime::isolation::ISOLATION_ENV,
        value_name = "sandbox|chroot",
        default_value = "sandbox",
        long_help = kiln::runtime::isolation::ISOLATION_HELP
    )]
    pub isolation: kiln::runtime::Isolation,
}

/// Runs the command line and turns any error into a message on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread starts: unshare(CLONE_NEWUSER) refuses a multithreaded process.
    let default_root = cli.root.is_none().then(Store::default_root);
    if let Err(err) = rootless::enter(cli.command.rootless_need(), default_root.as_deref()) {
        report::print(&err);
        return ExitCode::FAILURE;
    }
    let root = cli
        .root
        .or(default_root)
        .unwrap_or_else(Store::default_root);
    let result = match cli.command {
        Command::Build(args) => build::run(&root, args),
        Command::Parse(args) => parse::run(args),
        Command::Images(args) => images::images(&root, args),
        Command::Tag(args) => images::tag(&root, args),
        Command::Rmi(args) => images::rmi(&root, args),
        Command::Inspect(args) => containers::inspect(&root, args),
        Command::History(args) => images::history(&root, args),
        Command::Prune(args) => images::prune(&root, args),
        Command::Df(args) => images::df(&root, args),
        Command::Run(args) => return run::run(&root, args),
        Command::Import(args) => archive::import(&root, args),
        Command::Export(args) => archive::export(&root, args),
        Command::Save(args) => archive::save(&root, args),
        Command::Load(args) => archive::load(&root, args),
        Command::Pull(args) => registry::pull_command(&root, args),
        Command::Push(args) => registry::push_command(&root, args),
        Command::Login(args) => registry::login(args),
        Command::Logout(args) => registry::logout(args),
        Command::Info(args) => info::info(args),
        Command::Diff(args) => container_fs::diff(&root, args),
        Command::Commit(args) => container_fs::commit(&root, args),
        Command::Cp(args) => container_fs::cp(&root, args),
        Command::Exec(args) => return exec::exec(&root, args),
        Command::Top(args) => exec::top(&root, args),
        Command::Create(args) => return run::create(&root, args),
        Command::Ps(args) => containers::ps(&root, args),
        Command::Logs(args) => containers::logs(&root, args),
        Command::Stop(args) => containers::stop(&root, args),
        Command::Kill(args) => containers::kill(&root, args),
        Command::Start(args) => return with_code(containers::start(&root, args)),
        Command::Restart(args) => containers::restart(&root, args),
        Command::Wait(args) => containers::wait(&root, args),
        Command::Rm(args) => containers::rm(&root, args),
        Command::Rename(args) => containers::rename(&root, args),
        Command::Container(args) => return with_code(containers::container(&root, args)),
        Command::ContainerSupervise(args) => return containers::supervise(&root, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::print(&err);
            ExitCode::FAILURE
        }
    }
}

/// A command's own exit code, or its error printed and exit code 1.
fn with_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|err| {
        report::print(&err);
        ExitCode::FAILURE
    })
}
