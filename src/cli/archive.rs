//! Moving images in and out, with docker's arguments and output: `import`, `export`, `save`,
//! `load`.

use super::term::{errln, outln};
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln::archive::view::human_size;
use kiln::archive::{
    self, DEFAULT_MAX_BYTES, ImportOptions, LoadOptions, Output, Progress, SaveFormat,
};
use kiln::error::escape_line;
use kiln::store::Store;
use std::fs::File;
use std::io::{self, BufReader, IsTerminal as _, Read};
use std::path::{Path, PathBuf};

fn open(root: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(root)?)
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The root filesystem tar (plain, gzip or zstd); `-` reads it from stdin.
    #[arg(value_name = "FILE|-")]
    file: String,
    /// Tag the new image with this name.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, USER, VOLUME or WORKDIR (repeatable).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    changes: Vec<String>,
    /// The history comment (default: `Imported from FILE`).
    #[arg(short, long)]
    message: Option<String>,
    /// The platform the image is for (`OS/ARCH[/VARIANT]`; default: this machine's), for a
    /// root filesystem of another architecture.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

/// `docker import`: prints the new image's ID.
pub fn import(root: &Path, args: ImportArgs) -> anyhow::Result<()> {
    if args.file.starts_with("http://") || args.file.starts_with("https://") {
        anyhow::bail!(
            "kiln import reads files, not URLs: download it first (curl -fLo FILE {}) and import \
             FILE",
            args.file
        );
    }
    let store = open(root)?;
    let file = Some(&args.file).filter(|f| *f != "-").map(Path::new);
    let input = input(file, "import", "give FILE")?;
    let options = ImportOptions {
        source: args.file.clone(),
        message: args.message,
        changes: args.changes,
        name: args.reference,
        max_bytes: DEFAULT_MAX_BYTES,
        platform: args
            .platform
            .as_deref()
            .map(kiln::oci::Platform::parse_normalized)
            .transpose()?,
    };
    let image = archive::import_rootfs(&store, input, &options)?;
    outln!("{}", image.id)?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The container (name, ID or unique ID prefix), as in docker; kiln also takes an image
    /// (name or ID) and writes its flattened root filesystem. A container wins over an image
    /// of the same name.
    #[arg(value_name = "CONTAINER|IMAGE")]
    image: String,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Of a multi-platform image, this platform's image (`OS/ARCH[/VARIANT]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

/// `docker export`: a container's filesystem as one tar; of an image (kiln's addition), its
/// flattened root filesystem.
pub fn export(root: &Path, args: ExportArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    // A container by id or name; by an id prefix only when no image has that name (a short
    // image name such as `cafe` reads as an id prefix too).
    let container = store.find_container(&args.image).ok().filter(|record| {
        let exact = record.id == args.image
            || record.name == args.image.strip_prefix('/').unwrap_or(&args.image);
        exact || store.resolve(&args.image).is_err()
    });
    if args.platform.is_none()
        && let Some(record) = container
    {
        let fs = kiln::container::changes::ContainerFs::of(&store, &record)?;
        let mut output = Output::open(args.output.as_deref())?;
        kiln::container::changes::export(&store, &fs, output.writer())?;
        output.finish()?;
        return Ok(());
    }
    let platform = args
        .platform
        .as_deref()
        .map(kiln::oci::Platform::parse_normalized)
        .transpose()?;
    let image = store.resolve_platform(&args.image, platform.as_ref())?;
    let mut output = Output::open(args.output.as_deref())?;
    let exported = archive::export_rootfs(
        &store,
        &image,
        output.writer(),
        DEFAULT_MAX_BYTES,
        None,
        None,
    )?;
    output.finish()?;
    if exported.skipped_devices > 0 {
        errln!(
            "warning: {} device nodes were left out: kiln creates them only when it runs as root",
            exported.skipped_devices
        )?;
    }
    Ok(())
}

/// `--format` of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// The archive `docker save` writes and `docker load` reads, with the OCI layout files
    /// beside it.
    Docker,
    /// An OCI image layout as a tar.
    Oci,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The images: names (a name without a tag saves all its tags) or IDs.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// Write to this file instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The archive format.
    #[arg(long, value_enum, default_value = "docker")]
    format: FormatArg,
    /// Of multi-platform images, save only this platform's image (`OS/ARCH[/VARIANT]`).
    /// Without it, `--format oci` saves them whole and docker's format this machine's image.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

/// `docker save`.
pub fn save(root: &Path, args: SaveArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let format = match args.format {
        FormatArg::Docker => SaveFormat::Docker,
        FormatArg::Oci => SaveFormat::Oci,
    };
    let platform = args
        .platform
        .as_deref()
        .map(kiln::oci::Platform::parse_normalized)
        .transpose()?;
    let mut output = Output::open(args.output.as_deref())?;
    archive::save_platform(
        &store,
        &args.images,
        format,
        platform.as_ref(),
        output.writer(),
        DEFAULT_MAX_BYTES,
    )?;
    Ok(output.finish()?)
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read the archive from this file instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Don't report the layers as they are unpacked.
    #[arg(short, long)]
    quiet: bool,
}

/// `docker load`: prints `Loaded image: NAME` per tag, `Loaded image ID: ID` for an image
/// without tags (docker prints IDs only when the last image has no tags; kiln prints each
/// untagged image's). Layer progress goes to stderr.
pub fn load(root: &Path, args: LoadArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let input = input(args.input.as_deref(), "load", "use -i FILE")?;
    let quiet = args.quiet;
    let mut progress = |event: Progress| match event {
        Progress::Layer { diff_id, size } if !quiet => {
            // A broken stderr must not fail the load.
            let _ = errln!("Loaded layer {} ({})", diff_id.short(), human_size(size, 3));
        }
        Progress::Layer { .. } => {}
    };
    let loaded = archive::load(&store, input, &LoadOptions::default(), &mut progress)?;
    for image in loaded {
        for (name, old) in &image.moved {
            outln!(
                "The image {} already exists, renaming the old one with ID {old} to empty string",
                escape_line(&name.to_string())
            )?;
        }
        for name in &image.names {
            outln!("Loaded image: {}", escape_line(&name.to_string()))?;
        }
        if image.names.is_empty() {
            outln!("Loaded image ID: {}", image.id)?;
        }
    }
    Ok(())
}

/// The input file, or stdin when there is none (refused when it is a terminal, as docker does;
/// `command` and `instead` make the message).
fn input(path: Option<&Path>, command: &str, instead: &str) -> anyhow::Result<Box<dyn Read>> {
    match path {
        Some(path) => {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            Ok(Box::new(BufReader::new(file)))
        }
        None if io::stdin().is_terminal() => Err(anyhow::anyhow!(
            "requested {command} from stdin, but stdin is a terminal; {instead} or redirect stdin"
        )),
        None => Ok(Box::new(BufReader::new(io::stdin().lock()))),
    }
}
