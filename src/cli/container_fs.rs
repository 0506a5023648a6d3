//! A container's files, with docker's arguments and output: `diff`, `commit`, `cp` (and
//! `export` of a container, in `archive.rs`).

use super::term::outln;
use clap::Args;
use kiln::archive::Output;
use kiln::container::changes::{self, CommitOptions, ContainerFs};
use kiln::container::copy::{self, CopyOptions};
use kiln::error::escape_line;
use kiln::store::Store;
use std::path::Path;

fn container_fs(store: &Store, reference: &str) -> anyhow::Result<ContainerFs> {
    let record = store.find_container(reference)?;
    Ok(ContainerFs::of(store, &record)?)
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The container (name, ID or unique ID prefix).
    container: String,
}

/// `docker diff`: one line per change (`A`dded, `C`hanged, `D`eleted), by path.
pub fn diff(root: &Path, args: DiffArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let fs = container_fs(&store, &args.container)?;
    for change in changes::diff(&fs)? {
        outln!("{}", escape_line(&change.to_string()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The container (name, ID or unique ID prefix).
    container: String,
    /// Tag the new image with this name.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// The author (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long)]
    author: Option<String>,
    /// The commit message.
    #[arg(short, long)]
    message: Option<String>,
    /// Apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, USER, VOLUME or WORKDIR (repeatable).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// Pause the container while its changes are read (`--pause=false` to read them live).
    #[arg(
        short,
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        action = clap::ArgAction::Set
    )]
    pause: bool,
}

/// `docker commit`: a new image of the container's changes; prints its ID.
pub fn commit(root: &Path, args: CommitArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let fs = container_fs(&store, &args.container)?;
    let image = changes::commit(
        &store,
        &fs,
        &CommitOptions {
            author: args.author,
            message: args.message,
            changes: args.changes,
            pause: args.pause,
            reference: args.reference,
        },
    )?;
    outln!("{}", image.id)?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// `CONTAINER:SRC_PATH`, a host path, or `-` (a tar on stdin).
    #[arg(value_name = "SRC")]
    source: String,
    /// `CONTAINER:DEST_PATH`, a host path, or `-` (a tar on stdout).
    #[arg(value_name = "DEST")]
    dest: String,
    /// Archive mode: keep the files' owners (uid/gid).
    #[arg(short, long)]
    archive: bool,
    /// Follow a symbolic link named as SRC.
    #[arg(short = 'L', long)]
    follow_link: bool,
}

/// `docker cp`: files between a container and the host, confined to the container's root.
pub fn cp(root: &Path, args: CpArgs) -> anyhow::Result<()> {
    let options = CopyOptions {
        archive: args.archive,
        follow_link: args.follow_link,
    };
    let store = Store::open(root)?;
    match (
        copy::split_container_path(&args.source),
        copy::split_container_path(&args.dest),
    ) {
        (Some(_), Some(_)) => anyhow::bail!("copying between containers is not supported"),
        (None, None) => anyhow::bail!("must specify at least one container source"),
        (Some((container, path)), None) => {
            let record = store.find_container(container)?;
            let mut output = if args.dest == "-" {
                Some(Output::open(None)?)
            } else {
                None
            };
            let mut sink = std::io::sink();
            let out: &mut dyn std::io::Write = match output.as_mut() {
                Some(output) => output.writer(),
                None => &mut sink,
            };
            let path = if path.is_empty() { "/" } else { path };
            if !copy::copy_out(&store, &record, path, &args.dest, out, options)? {
                anyhow::bail!(
                    "No such container:path: {}:{}",
                    escape_line(container),
                    escape_line(path)
                );
            }
            if let Some(output) = output {
                output.finish()?;
            }
            Ok(())
        }
        (None, Some((container, path))) => {
            let record = store.find_container(container)?;
            let path = if path.is_empty() { "/" } else { path };
            #[allow(clippy::disallowed_methods)] // A tar stream, not kiln's text.
            let stdin = std::io::stdin().lock();
            copy::copy_in(&store, &record, &args.source, path, stdin, options)?;
            Ok(())
        }
    }
}
