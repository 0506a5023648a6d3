//! Command-line interface: argument parsing (clap) and one module per subcommand. Errors are
//! `anyhow` here; front-end errors that carry a span are printed as a snippet.

mod archive;
mod build;
mod call;
mod container_fs;
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
    /// Show low-level information on images (JSON).
    Inspect(images::InspectArgs),
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
            | Command::Diff(_) => Need::Quiet,
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
        Command::Inspect(args) => images::inspect(&root, args),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report::print(&err);
            ExitCode::FAILURE
        }
    }
}
