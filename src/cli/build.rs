//! `kiln build`: docker build's flags over [`kiln::builder::build`], with progress rendered by
//! [`super::progress`]; `--dry-run` runs the checks the build runs before its first step
//! ([`kiln::builder::check`]) and prints what the build would do instead.

use super::call::{CallFunc, CallMethod};
use super::parse::read_dockerfile;
use super::progress::{self, ProgressMode};
use super::term::{err, errln, out, outln};
use super::{located, unlocated};
use anyhow::{Context as _, bail};
use clap::Args;
use kiln::archive::DEFAULT_MAX_BYTES;
use kiln::builder::annotations::Annotations;
use kiln::builder::export::{Export, ExportOptions, Exported, OutputSpec, export_image};
use kiln::builder::git_context;
use kiln::builder::http_context::{HttpContext, is_http_context};
use kiln::builder::image_export::ImageExport;
use kiln::builder::metadata::BuildMetadata;
use kiln::builder::stdin_context::{
    MAX_CONTEXT_BYTES, PEEK_BYTES, UnpackedContext, is_context_archive,
};
use kiln::builder::worker::StepError;
use kiln::builder::{
    BuildError, BuildOptions, Checked, ContextOrigin, NamedContext, RemoteContext, RemoteKind,
    build, check,
};
use kiln::cache::remote::transport::CacheTransport;
use kiln::cache::remote::{self, CacheExport, parse_cache_from, parse_cache_to};
use kiln::error::escape_line;
use kiln::frontend::context::ContextError;
use kiln::frontend::diagnostic::Located;
use kiln::frontend::instruction::Instruction;
use kiln::frontend::limits::MAX_DOCKERFILE_BYTES;
use kiln::frontend::lint::LintError;
use kiln::frontend::plan::{PlanError, default_dockerfile};
use kiln::layer::ExportFormat;
use kiln::oci::timestamp::ZonedTime;
use kiln::registry::NoProgress;
use kiln::runtime::NetworkMode;
use kiln::solver::Cancel;
use kiln::store::{Store, StoredImage};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many files of one COPY/ADD source the dry run lists before summarising.
const LISTED_FILES: usize = 20;

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The build context directory; `-` reads standard input: a (possibly compressed) tar of
    /// the context, or a Dockerfile, built without a context; a git repository
    /// (`https://host/repo.git#ref:subdir`, `git://…`, `ssh://…`, `git@host:repo.git`), whose
    /// Dockerfile (`-f` inside it) is read from it; any other http(s) URL is downloaded: a
    /// (possibly compressed) tar is the context, any other body the Dockerfile.
    context: PathBuf,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name and optionally tag the image (`name:tag`); may be repeated.
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Set a build-time variable (`K=V`, or `K` to take the value from the environment).
    #[arg(long = "build-arg", value_name = "K[=V]")]
    build_args: Vec<String>,
    /// The stage to build (default: the last stage).
    #[arg(long)]
    target: Option<String>,
    /// The platforms to build for, `OS/ARCH[/VARIANT]` (repeatable, or comma-separated):
    /// one gives an image for it, more an image index with one image each. RUN steps for
    /// another architecture than this machine's run under the QEMU emulator binfmt_misc has
    /// for it (`kiln info` lists what runs here). Default: this machine's.
    #[arg(long = "platform", value_name = "PLATFORM")]
    platforms: Vec<String>,
    /// Run every step, ignoring the cache.
    #[arg(long)]
    no_cache: bool,
    /// Run the steps of these stages, ignoring the cache (repeatable, or comma-separated).
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    no_cache_filter: Vec<String>,
    /// Say, for each step that runs, why it missed the cache.
    #[arg(long)]
    explain_cache: bool,
    /// Set a label on the image (`K=V`, repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// The network of RUN steps: `default` (a private network with outbound access), `none`
    /// (only loopback) or `host` (needs `--allow network.host`). `RUN --network=` overrides it.
    #[arg(long, value_enum, default_value = "default")]
    network: NetworkArg,
    /// Print only the image ID on success.
    #[arg(short, long)]
    quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Write the build result's metadata as JSON to FILE, as docker buildx does:
    /// containerimage.descriptor, containerimage.digest, containerimage.config.digest,
    /// image.name, and cache.manifest with --cache-to.
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Add an OCI annotation to the image: `[TYPE[,TYPE...]:]KEY=VALUE`, TYPE one of manifest
    /// (the default), manifest-descriptor, index, index-descriptor, optionally with a platform
    /// (`manifest[linux/arm64]:KEY=VALUE`). Index types need a multi-platform build.
    /// Repeatable.
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    annotations: Vec<String>,
    /// How to show progress: auto (tty when stderr is a terminal and not in CI), tty, plain,
    /// json (one event per line).
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Also export the image: `type=docker|oci|tar|local,dest=PATH` (`dest=-`: stdout for
    /// docker, oci and tar), `type=image` with BuildKit's options (`"name=A,B"`,
    /// `push=true`, `push-by-digest=true`, `name-canonical=true`, `registry.insecure=true`,
    /// `dangling-name-prefix=P`, `store=false`; `unpack=` is accepted: kiln's store keeps
    /// every image ready to run) or `type=registry` (`type=image,push=true`); a push without
    /// `name=` pushes the -t names. `rewrite-timestamp=true` on an image export clamps the
    /// file times of the layers the build makes to SOURCE_DATE_EPOCH;
    /// `annotation[-TYPE][[PLATFORM]].KEY=VALUE` annotates the image (see --annotation).
    /// Repeatable.
    #[arg(short = 'o', long = "output", value_name = "type=TYPE,dest=PATH")]
    outputs: Vec<String>,
    /// Export the build cache after the build: `type=local,dest=DIR[,tag=T][,mode=min|max]` or
    /// `type=registry,ref=REF[,mode=min|max]` (mode=max also exports intermediate stages and
    /// the content of RUN --mount=type=cache directories; `cache-mounts=true|false` overrides
    /// the latter). Repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    cache_to: Vec<String>,
    /// Use a build cache exported by another build: `type=local,src=DIR[,tag=T]` or
    /// `type=registry,ref=REF` (or just REF). Repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    cache_from: Vec<String>,
    /// Pull every FROM image, even when the store has it (a moved tag is seen).
    #[arg(long)]
    pull: bool,
    /// Push the image to its registry under each -t name (buildx's shorthand for
    /// `--output type=registry`: every `-o type=image` pushes too).
    #[arg(long)]
    push: bool,
    /// Load the image into the image store: accepted, as kiln's store has every built image
    /// (buildx's shorthand for `--output type=docker`).
    #[arg(long)]
    load: bool,
    #[command(flatten)]
    registry: super::registry::RegistryFlags,
    /// How many steps run at once (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// Run every check the build runs before its first step, fetching nothing, then print the
    /// resolved stages, their order and parallel groups, the context files each COPY/ADD
    /// reads and the remote sources the build would fetch, without building.
    #[arg(long)]
    dry_run: bool,
    /// Lend a secret to `RUN --mount=type=secret`: `id=ID[,src=FILE|,env=VAR]` (repeatable).
    /// `HTTP_AUTH_HEADER_<host>` (the whole `Authorization` value) and `HTTP_AUTH_TOKEN_<host>`
    /// (a bearer token) authenticate downloads from that host. Its bytes reach no layer, log or
    /// cache.
    #[arg(long = "secret", value_name = "id=ID[,src=FILE|env=VAR]")]
    secrets: Vec<String>,
    /// Lend an SSH agent to `RUN --mount=type=ssh`: `default`, `ID=SOCKET` or
    /// `ID=KEY[,KEY...]` (key files are served by an agent kiln runs for the build). Repeatable.
    #[arg(long = "ssh", value_name = "ID[=SOCKET|KEY,...]")]
    ssh: Vec<String>,
    /// A named context: `NAME=DIR`, `NAME=docker-image://REF`,
    /// `NAME=oci-layout://PATH[:TAG|@DIGEST]`, a git repository
    /// (`NAME=https://host/repo.git#ref:subdir`, `git://…`, `ssh://…`, `git@host:repo.git`) or
    /// `NAME=https://URL` (the download as the file `context`); it replaces what FROM,
    /// `COPY --from` and `RUN --mount from=` call NAME (a stage of that name too). Repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// How to evaluate the build (buildx's `--call`): `build` (default), `check` (run the build
    /// checks without building; `,ignorestatus=true` exits 0 when something was found),
    /// `outline` (the build args, secrets and ssh the target uses) or `targets` (the stages);
    /// `,format=json` prints BuildKit's JSON.
    #[arg(
        long = "call",
        value_name = "METHOD[,format=json|text]",
        default_value = "build"
    )]
    call: CallFunc,
    /// Shorthand for `--call=check`.
    #[arg(long)]
    check: bool,
    /// Allow an extra privilege: `security.insecure` (for `RUN --security=insecure`) or
    /// `network.host` (repeatable, or comma-separated).
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    allow: Vec<Entitlement>,
    #[command(flatten)]
    isolation: super::IsolationArgs,
    /// Attach SLSA provenance to the image (buildx's shorthand for `--attest
    /// type=provenance`): `true`, `false`, or options such as `mode=min|max`, `version=v1|v0.2`,
    /// `builder-id=ID`, `reproducible=true`. The image becomes an index with an attestation
    /// manifest per platform.
    #[arg(long, value_name = "true|false|mode=max,...")]
    provenance: Option<String>,
    /// Attach an SPDX SBOM of each platform's root filesystem (`true` or `false`).
    #[arg(long, value_name = "true|false")]
    sbom: Option<String>,
    /// Attach an attestation: `type=provenance[,mode=max,…]` or `type=sbom`; `disabled=true`
    /// turns one off (repeatable; `--provenance` and `--sbom` are applied after these).
    #[arg(long = "attest", value_name = "type=provenance|sbom,...")]
    attests: Vec<String>,
}

/// What `--allow` can grant (BuildKit's entitlements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Entitlement {
    #[value(name = "security.insecure")]
    SecurityInsecure,
    /// RUN steps may use the host's network (`RUN --network=host`, `--network host`).
    #[value(name = "network.host")]
    NetworkHost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum NetworkArg {
    Default,
    Host,
    None,
}

pub fn run(root: &Path, args: BuildArgs) -> anyhow::Result<()> {
    // Before anything is read: a signal in any phase stops the command (see `interrupt`).
    let interrupt = super::interrupt::Interrupt::install();
    // Everything the flags say is checked first, for a dry run too.
    let outputs = args
        .outputs
        .iter()
        .map(|spec| spec.parse::<OutputSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    let rewrite_timestamp = outputs.iter().any(|output| output.rewrite_timestamp);
    let mut annotations = Annotations::default();
    for flag in &args.annotations {
        annotations
            .add_flag(flag)
            .with_context(|| format!("invalid --annotation {flag:?}"))?;
    }
    // BuildKit's image writer refuses what Docker's media types have no room for; buildx
    // gives every image export the --annotation flags.
    if let Some(annotation) = annotations.oci_only()
        && let Some(output) = outputs.iter().find(|output| {
            output.format.oci_media_types == Some(false)
                && !matches!(output.export, Export::Local(_) | Export::Tar(_))
        })
    {
        bail!(
            "cannot export annotations with \"oci-mediatypes=false\": --annotation \
             {annotation} is an index or descriptor annotation, and an --output ({:?}) asks for \
             Docker's media types",
            output.export
        );
    }
    for output in &outputs {
        annotations.extend(&output.annotations);
    }
    let exports = image_exports(
        outputs
            .into_iter()
            .map(|output| (output.export, output.format))
            .collect(),
        &args.tags,
        args.push,
    )?;
    let (cache_from, cache_to) = (cache_from(&args)?, cache_to(&args)?);
    let named_contexts = args
        .build_contexts
        .iter()
        .map(|flag| NamedContext::parse(flag))
        .collect::<Result<_, _>>()?;
    let platforms = platforms(&args.platforms)?;
    let attestations = kiln::builder::attestations::AttestationRequest::parse(
        &args.attests,
        args.provenance.as_deref(),
        args.sbom.as_deref(),
    )?;
    let build_args = with_source_date_epoch(build_args(&args.build_args)?);
    let session = Arc::new(session(&args)?);
    // A dry run writes nothing to the store: it reads the store when there is one, and opens
    // (creates) it only to unpack a context from standard input or a URL.
    // A git repository as the context: its checkout in the store is the context directory.
    let git = match args.context.to_str() {
        Some(value) if value != "-" => git_context::main_context(value, &build_args)?,
        _ => None,
    };
    let call = match args.check {
        true => CallFunc {
            method: CallMethod::Check,
            ..args.call
        },
        false => args.call,
    };
    // The checks read the store (base images' configs) but write nothing to it.
    let reads_only = args.dry_run || call.method != CallMethod::Build;
    let unpacks = git.is_some()
        || is_http_context(&args.context.to_string_lossy())
        || args.context.as_os_str() == "-";
    let store = (!reads_only || unpacks || root.join("oci-layout").exists())
        .then(|| Store::open(root))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let input = read_input(store.as_ref(), &args, git.as_ref(), session.as_ref())?;
    if call.method.answers_from_dockerfile_alone() {
        let input = super::call::CallInput {
            dockerfile: &input.bytes,
            name: &input.name,
            target: args.target.as_deref(),
            build_args: &build_args,
            platform: platforms.first(),
        };
        return super::call::answer(&call, &input);
    }
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (key, value) = label.split_once('=').unwrap_or((label.as_str(), ""));
        labels.insert(key.to_string(), value.to_string());
    }
    let options = BuildOptions {
        dockerfile: input.bytes.clone(),
        dockerfile_name: input.name.clone(),
        dockerfile_path: input.dockerfile_path.clone(),
        context_dir: input.context_dir.clone(),
        remote_context: input.remote.clone(),
        build_args,
        target: args.target.clone(),
        tags: args.tags.clone(),
        labels,
        network: match args.network {
            NetworkArg::Default => NetworkMode::Private,
            NetworkArg::Host => NetworkMode::Host,
            NetworkArg::None => NetworkMode::None,
        },
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        jobs: args.jobs,
        explain_cache: args.explain_cache,
        cache_from,
        cache_to,
        pull: if args.pull {
            kiln::registry::PullPolicy::Always
        } else {
            kiln::registry::PullPolicy::Missing
        },
        registry: args.registry.client_options(),
        allow_insecure: args.allow.contains(&Entitlement::SecurityInsecure),
        allow_network_host: args.allow.contains(&Entitlement::NetworkHost),
        session,
        named_contexts,
        rewrite_timestamp,
        platforms,
        annotations,
        attestations,
        isolation: args.isolation.isolation,
    };
    let text = String::from_utf8_lossy(&input.bytes).into_owned();
    if call.method == CallMethod::Check {
        let checked = kiln::builder::lint(store.as_ref(), &options);
        return super::call::print_check(&call, &checked, &input.name, &input.bytes);
    }
    if args.dry_run {
        // Only read: a dry run of a context from stdin or a URL opened the store to unpack it.
        let checked = check(store.as_ref(), &options, &NoBuildProgress)
            .map_err(|err| build_error(err, &input.shown_context, &input.name, &text))?;
        for warning in &checked.plan.resolved.warnings {
            match warning.span {
                Some(span) => errln!(
                    "warning: {} ({}:{}:{})",
                    escape_line(&warning.message),
                    input.name,
                    span.start.line,
                    span.start.column
                )?,
                None => errln!("warning: {}", escape_line(&warning.message))?,
            }
        }
        for finding in &checked.plan.lint.findings {
            err!(
                "{}",
                super::call::render_finding(finding, &input.name, &text)
            )?;
        }
        out!("{}", describe(&checked, &input, &args, &options.platforms))?;
        return Ok(());
    }
    let store = store.context("the build has no store")?;
    let renderer = Arc::new(progress::renderer(
        args.progress,
        args.quiet,
        // The renderer escapes what it draws (see `progress`): its tty look writes cursor
        // movements of its own.
        #[allow(clippy::disallowed_methods)]
        Box::new(std::io::stderr()),
    ));
    let cancel = Cancel::new();
    let progress = interrupt.progress(renderer.clone(), &cancel);
    let result = build(&store, &options, progress, &cancel);
    renderer.finish();
    let output =
        result.map_err(|err| build_error(err, &input.shown_context, &input.name, &text))?;
    for (step, reasons) in &output.explanations {
        errln!("cache miss: {}", escape_line(step))?;
        for reason in reasons {
            errln!("  - {}", escape_line(reason))?;
        }
    }
    // A multi-platform image is named by its index, as docker's containerd store does.
    let id = match &output.index {
        Some(index) => index.digest.to_string(),
        None => output.image.id.to_string(),
    };
    // The names of the metadata's `image.name`: the tags, then the image exports' names.
    let mut names = args.tags.clone();
    // The image as the last push sent it or the last archive export wrote it, which the
    // metadata names (BuildKit's response names the image its exporter made, compressed as
    // asked; of several exports, the last one's).
    let mut exported: Option<oci_spec::image::Descriptor> = None;
    for (spec, format) in &exports {
        let export_options = ExportOptions {
            registry: options.registry.clone(),
            max_bytes: DEFAULT_MAX_BYTES,
            source_date_epoch: output.source_date_epoch,
            format: *format,
            attestation_files: options.attestations.files(),
        };
        match write_export(&store, &output.image, spec, &export_options)? {
            Exported::Image(image) => {
                for name in image.names {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                exported = image.pushed_descriptor.map(|d| *d).or(exported);
            }
            Exported::Archive(written) => {
                // An archive's `name=` names the image too (BuildKit's oci/docker exporters
                // answer `image.name` with it).
                if let Export::Docker(archive) | Export::Oci(archive) = spec {
                    for name in &archive.names {
                        if !names.contains(name) {
                            names.push(name.clone());
                        }
                    }
                }
                exported = Some(*written);
            }
            Exported::Rootfs(_) => {}
        }
    }
    // As buildx: the ID and the metadata once every export (push) has succeeded.
    if args.quiet {
        outln!("{id}")?;
    }
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id)
            .with_context(|| format!("cannot write --iidfile {}", path.display()))?;
    }
    if let Some(path) = &args.metadata_file {
        let mut metadata = BuildMetadata::of(&output, &names);
        metadata.add_fields(provenance_fields(&output));
        if let Some(exported) = &exported {
            metadata.set_exported(exported);
        }
        kiln::sys::atomic::atomic_write(path, &metadata.to_json())
            .with_context(|| format!("cannot write --metadata-file {}", path.display()))?;
    }
    Ok(())
}

/// The exports with buildx's rules for image exports applied: one without `name=` takes the
/// `-t` names; `--push` makes every image export push, and pushes the `-t` names when no image
/// export took them. A push with no name at all is refused before the build.
fn image_exports(
    mut exports: Vec<(Export, ExportFormat)>,
    tags: &[String],
    push: bool,
) -> anyhow::Result<Vec<(Export, ExportFormat)>> {
    let mut tags_taken = false;
    for (export, _) in &mut exports {
        if let Export::Image(image) = export {
            image.push |= push;
            if image.names.is_empty() && !tags.is_empty() {
                image.names = tags.to_vec();
                tags_taken = true;
            }
        }
    }
    if push && !tags_taken {
        if tags.is_empty() && !exports.iter().any(|(e, _)| matches!(e, Export::Image(_))) {
            bail!("--push needs a name to push to: give -t NAME");
        }
        if !tags.is_empty() {
            exports.push((
                Export::Image(ImageExport {
                    names: tags.to_vec(),
                    push: true,
                    ..ImageExport::default()
                }),
                ExportFormat::default(),
            ));
        }
    }
    for (export, _) in &exports {
        if let Export::Image(image) = export
            && !image.push_has_name()
        {
            bail!(
                "a push needs a name to push to: give -t NAME or name=NAME (buildx: tag is \
                 needed when pushing to registry)"
            );
        }
    }
    Ok(exports)
}

/// `--metadata-file`'s `buildx.build.provenance` when the build attached provenance, as buildx
/// writes it (`BUILDX_METADATA_PROVENANCE=min|max|disabled`, `min` by default).
fn provenance_fields(
    output: &kiln::builder::BuildOutput,
) -> serde_json::Map<String, serde_json::Value> {
    let mode = std::env::var("BUILDX_METADATA_PROVENANCE").ok();
    kiln::builder::attestations::metadata_provenance(
        &output.provenance,
        output.images.len() > 1,
        mode.as_deref(),
    )
}

/// `--platform` values: each a comma-separated list, every platform once, normalised.
fn platforms(flags: &[String]) -> anyhow::Result<Vec<kiln::oci::Platform>> {
    let mut all: Vec<kiln::oci::Platform> = Vec::new();
    for flag in flags {
        for platform in kiln::oci::Platform::parse_list(flag)? {
            if !all.contains(&platform) {
                all.push(platform);
            }
        }
    }
    Ok(all)
}

/// A dry run reports no progress: it runs no step.
struct NoBuildProgress;

impl kiln::builder::Progress for NoBuildProgress {
    fn event(&self, _event: kiln::builder::BuildEvent) {}
}

/// The build's context and Dockerfile, read as `kiln build` reads them (its CONTEXT argument
/// and `-f`).
struct Input {
    /// The context directory the build reads; `None` for a Dockerfile on stdin.
    context_dir: Option<PathBuf>,
    /// The context as the user gave it, for messages (a directory, `-` or a URL).
    shown_context: PathBuf,
    /// Where the context came from when it is a URL.
    remote: Option<RemoteContext>,
    /// The Dockerfile's name in messages.
    name: String,
    /// Its path on disk, for `<Dockerfile>.dockerignore`; `None` when it has none.
    dockerfile_path: Option<PathBuf>,
    bytes: Vec<u8>,
    /// The unpacked context of stdin, removed when the input drops (after the build).
    _stdin: Option<UnpackedContext>,
    /// The context downloaded from a URL, removed when the input drops.
    _url: Option<HttpContext>,
    /// The checkout of a git context, held (no prune removes it) until the input drops.
    _git: Option<kiln::git::Checkout>,
}

/// Reads the context argument and `-f`: a directory; `-` (a context tar or a bare Dockerfile on
/// standard input); or an http(s) URL, downloaded ([`HttpContext`]). A stdin or URL context is
/// unpacked into `store`'s staging area.
fn read_input(
    store: Option<&Store>,
    args: &BuildArgs,
    git: Option<&kiln::git::GitSource>,
    session: &dyn kiln::builder::Session,
) -> anyhow::Result<Input> {
    if let Some(source) = git {
        let store = store.context("a context from a git repository needs a store")?;
        return read_git_input(store, source, args.file.as_deref(), session);
    }
    let given = args.context.to_string_lossy().into_owned();
    if is_http_context(&given) {
        let store = store.context("a context from a URL needs a store")?;
        return read_url_input(store, &given, args.file.as_deref(), session);
    }
    if args.context.as_os_str() == "-" {
        let store = store.context("a context from standard input needs a store")?;
        return match read_stdin(store, args.file.as_deref())? {
            Stdin::Dockerfile(bytes) => Ok(Input {
                context_dir: None,
                shown_context: args.context.clone(),
                remote: None,
                name: "<stdin>".to_string(),
                dockerfile_path: None,
                bytes,
                _stdin: None,
                _url: None,
                _git: None,
            }),
            Stdin::Context(unpacked) => {
                // `-f` names a file inside the tar.
                let (name, bytes) = unpacked_dockerfile(&unpacked, args.file.as_deref())?;
                Ok(Input {
                    context_dir: Some(unpacked.dir().to_path_buf()),
                    shown_context: args.context.clone(),
                    remote: Some(RemoteContext {
                        origin: ContextOrigin::Stdin,
                        epoch: unpacked.newest_file_time().map(ZonedTime::utc),
                    }),
                    name,
                    // No `.dockerignore` applies to a context tar.
                    dockerfile_path: None,
                    bytes,
                    _stdin: Some(unpacked),
                    _url: None,
                    _git: None,
                })
            }
        };
    }
    let path = default_dockerfile(&args.context, args.file.as_deref());
    let from_stdin = path.as_os_str() == "-";
    let (name, bytes) = read_dockerfile(&path)?;
    Ok(Input {
        context_dir: Some(args.context.clone()),
        shown_context: args.context.clone(),
        remote: None,
        // `kiln build .` reads ./Dockerfile: call it Dockerfile in messages, as docker does.
        name: without_dot_slash(name),
        dockerfile_path: (!from_stdin).then_some(path),
        bytes,
        _stdin: None,
        _url: None,
        _git: None,
    })
}

/// The checkout of the git context `source` and its Dockerfile: `-f` names a file inside
/// the checkout (its subdirectory), `-f -` reads standard input. No `.dockerignore` applies.
fn read_git_input(
    store: &Store,
    source: &kiln::git::GitSource,
    file: Option<&Path>,
    session: &dyn kiln::builder::Session,
) -> anyhow::Result<Input> {
    let git = git_context::fetch(store, source, session)?;
    let checkout = git.checkout.path().to_path_buf();
    let (name, bytes) = match file {
        Some(file) if file.as_os_str() == "-" => read_dockerfile(file)?,
        _ => {
            let path = checkout.join(file.unwrap_or(Path::new("Dockerfile")));
            let (_, bytes) = read_inside(&checkout, &path)?;
            // Named as inside the repository, not by the directory kiln checked it out in.
            let name = path
                .strip_prefix(&checkout)
                .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
            (without_dot_slash(name), bytes)
        }
    };
    Ok(Input {
        context_dir: Some(checkout),
        shown_context: PathBuf::from(&source.remote_shown),
        remote: Some(RemoteContext {
            origin: ContextOrigin::Git(source.remote_shown.clone()),
            epoch: Some(git.time),
        }),
        name,
        dockerfile_path: None,
        bytes,
        _stdin: None,
        _url: None,
        _git: Some(git.checkout),
    })
}

/// The context downloaded from `url` and its Dockerfile: inside the archive (`-f` names it
/// there; `-f -` reads standard input, an absolute `-f` a local file, as buildx does), or the
/// body itself when it is not an archive.
fn read_url_input(
    store: &Store,
    url: &str,
    file: Option<&Path>,
    session: &dyn kiln::builder::Session,
) -> anyhow::Result<Input> {
    let downloaded = HttpContext::fetch(store, url, session)?;
    let remote = RemoteContext {
        origin: ContextOrigin::Url(url.to_string()),
        epoch: downloaded.epoch().map(ZonedTime::utc),
    };
    let (name, bytes) = match (downloaded.unpacked(), file) {
        (None, Some(file)) => bail!(
            "-f {}: {url} is not an archive, so its body is the Dockerfile",
            file.display()
        ),
        (None, None) => (url.to_string(), downloaded.body_dockerfile()?),
        (Some(_), Some(file)) if file.as_os_str() == "-" || file.is_absolute() => {
            read_dockerfile(file)?
        }
        (Some(unpacked), file) => unpacked_dockerfile(unpacked, file)?,
    };
    Ok(Input {
        context_dir: Some(downloaded.dir().to_path_buf()),
        shown_context: PathBuf::from(url),
        remote: Some(remote),
        name,
        // No `.dockerignore` applies to a context tar.
        dockerfile_path: None,
        bytes,
        _stdin: None,
        _url: Some(downloaded),
        _git: None,
    })
}

/// What `kiln build -` found on standard input.
enum Stdin {
    /// A context tar, unpacked.
    Context(UnpackedContext),
    /// A bare Dockerfile: the build has no context.
    Dockerfile(Vec<u8>),
}

/// Reads standard input as docker does for the context `-`: a (possibly compressed) tar is a
/// context whose Dockerfile is `Dockerfile` or `-f`'s path inside it; anything else is the
/// Dockerfile itself.
fn read_stdin(store: &Store, file: Option<&Path>) -> anyhow::Result<Stdin> {
    let mut stdin = std::io::stdin();
    let mut head = Vec::with_capacity(PEEK_BYTES);
    (&mut stdin)
        .take(PEEK_BYTES as u64)
        .read_to_end(&mut head)
        .context("cannot read standard input")?;
    if !is_context_archive(&head) {
        let whole = std::io::Cursor::new(head).chain(stdin);
        let bytes = kiln::frontend::limits::read_dockerfile(whole, "<stdin>")?;
        return Ok(Stdin::Dockerfile(bytes));
    }
    if let Some(file) = file
        && (file.as_os_str() == "-"
            || file.is_absolute()
            || file
                .components()
                .any(|c| c == std::path::Component::ParentDir))
    {
        bail!(
            "-f {} must name a Dockerfile inside the context tar read from standard input",
            file.display()
        );
    }
    let reader = std::io::Cursor::new(head).chain(stdin);
    let context = UnpackedContext::unpack(reader, store.staging(), MAX_CONTEXT_BYTES)
        .context("cannot read the build context from standard input")?;
    Ok(Stdin::Context(context))
}

/// The Dockerfile at `path` in a context kiln made at `root` (a tar read from standard input,
/// a git checkout); a symlink may lead anywhere inside the context but not out of it, and a
/// Dockerfile larger than [`MAX_DOCKERFILE_BYTES`] is refused.
fn read_inside(root: &Path, path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let shown = |path: &Path| {
        kiln::error::escape_controls(
            &path
                .strip_prefix(root)
                .unwrap_or(path)
                .display()
                .to_string(),
        )
    };
    let inside = root
        .canonicalize()
        .context("cannot open the build context")?;
    let real = path
        .canonicalize()
        .with_context(|| format!("cannot read the Dockerfile {}", shown(path)))?;
    if !real.starts_with(&inside) {
        bail!(
            "the Dockerfile {} leads outside the build context",
            shown(path)
        );
    }
    let size = std::fs::metadata(&real)
        .with_context(|| format!("cannot read the Dockerfile {}", shown(path)))?
        .len();
    // Refused before it is read (the read is bounded too).
    if size > MAX_DOCKERFILE_BYTES {
        bail!(
            "the Dockerfile {} is larger than {MAX_DOCKERFILE_BYTES} bytes",
            shown(path)
        );
    }
    read_dockerfile(&real)
}

/// The Dockerfile of an unpacked context tar: `file` inside it, else `Dockerfile` (or
/// `dockerfile`); its name in messages and its bytes.
fn unpacked_dockerfile(
    unpacked: &UnpackedContext,
    file: Option<&Path>,
) -> anyhow::Result<(String, Vec<u8>)> {
    Ok(match file {
        Some(file) => (
            without_dot_slash(file.display().to_string()),
            unpacked.dockerfile(file)?,
        ),
        None => unpacked.default_dockerfile()?,
    })
}

/// A failed build for printing. A front-end error renders as `--dry-run` renders it (at its
/// Dockerfile or .dockerignore line, or alone when it is about the context); a failed step
/// renders at its instruction as `NAME: WHY`, BuildKit's `[stage 2/3] RUN make: process ...
/// did not complete successfully`; any other error goes to the reporter with its causes.
fn build_error(err: BuildError, context: &Path, dockerfile: &str, text: &str) -> anyhow::Error {
    match &err {
        BuildError::Plan(PlanError::Context(ContextError::Dockerignore { path, text, source })) => {
            located(&as_given(context, path), text, source.as_ref())
        }
        BuildError::Plan(PlanError::Context(context_err)) => unlocated(context_err),
        // `error=true`: the findings, then the error that stops the build.
        BuildError::Plan(PlanError::Lint(LintError::Violation(violation))) => {
            let mut shown = String::new();
            for finding in &violation.report.findings {
                shown.push_str(&super::call::render_finding(finding, dockerfile, text));
            }
            let _ = write!(shown, "{}", unlocated(&err));
            anyhow::Error::new(super::report::SourceError::new(shown))
        }
        BuildError::Step { name, source, .. } => {
            let failed = StepFailed {
                err: &err,
                name,
                why: source,
            };
            match err.span() {
                Some(_) => located(dockerfile, text, &failed),
                None => unlocated(&failed),
            }
        }
        // A front-end error without a line (an unknown target) still names the Dockerfile.
        err if err.span().is_some() || matches!(err, BuildError::Plan(_)) => {
            located(dockerfile, text, err)
        }
        BuildError::Compile(_) | BuildError::NoContext => unlocated(&err),
        _ => anyhow::Error::new(err),
    }
}

/// A [`BuildError::Step`] printed as one message: the step's name, then its error (which
/// says why, e.g. the exit code) and that error's causes, as the chain of this one.
#[derive(Debug)]
struct StepFailed<'a> {
    err: &'a BuildError,
    name: &'a str,
    why: &'a StepError,
}

impl std::fmt::Display for StepFailed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl std::error::Error for StepFailed<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.why)
    }
}

impl Located for StepFailed<'_> {
    fn span(&self) -> Option<kiln::frontend::diagnostic::Span> {
        self.err.span()
    }

    fn help(&self) -> Option<String> {
        self.err.help()
    }
}

/// The transports of `--cache-from`.
fn cache_from(args: &BuildArgs) -> anyhow::Result<Vec<Arc<dyn CacheTransport>>> {
    let mut from = Vec::new();
    for spec in &args.cache_from {
        from.push(remote::open(
            &parse_cache_from(spec)?,
            &args.registry.client_options(),
        )?);
    }
    Ok(from)
}

/// The exports of `--cache-to`.
fn cache_to(args: &BuildArgs) -> anyhow::Result<Vec<CacheExport>> {
    let mut to = Vec::new();
    for spec in &args.cache_to {
        let parsed = parse_cache_to(spec)?;
        to.push(CacheExport {
            transport: remote::open(&parsed.location, &args.registry.client_options())?,
            mode: parsed.mode,
            cache_mounts: parsed.exports_cache_mounts(),
            compression: parsed.compression,
        });
    }
    Ok(to)
}

/// `SOURCE_DATE_EPOCH` from kiln's environment as a build arg, unless `--build-arg` gives one
/// (what docker buildx does).
fn with_source_date_epoch(mut args: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        && !args.contains_key("SOURCE_DATE_EPOCH")
    {
        args.insert("SOURCE_DATE_EPOCH".to_string(), epoch);
    }
    args
}

/// Writes one `-o` export (or a `--push`) of the built image; a push shows its blobs as
/// `kiln push` does, then `pushed REF@DIGEST`; a canonical name is shown as `named NAME@DIGEST`.
fn write_export(
    store: &Store,
    image: &StoredImage,
    export: &Export,
    options: &ExportOptions,
) -> anyhow::Result<Exported> {
    let pushes = matches!(export, Export::Image(image) if image.push);
    let exported = if pushes {
        let progress = super::registry::BlobProgress::new(false);
        let exported = export_image(store, image, export, options, &progress);
        progress.finish();
        exported?
    } else {
        export_image(store, image, export, options, &NoProgress)?
    };
    if let Exported::Image(image) = &exported {
        for (reference, digest) in &image.pushed {
            match reference.digest() {
                Some(_) => errln!("pushed {reference}")?,
                None => errln!("pushed {reference}@{digest}")?,
            }
        }
        for name in &image.canonical {
            errln!("named {name}")?;
        }
    }
    Ok(exported)
}

/// `path` (canonical, inside the context) as the user would write it: relative to the context
/// directory as given on the command line.
fn as_given(context: &Path, path: &Path) -> String {
    let shown = std::fs::canonicalize(context)
        .ok()
        .and_then(|root| path.strip_prefix(root).ok().map(|rel| context.join(rel)))
        .unwrap_or_else(|| path.to_path_buf());
    without_dot_slash(shown.display().to_string())
}

/// `./x` shown as `x`.
fn without_dot_slash(path: String) -> String {
    match path.strip_prefix("./") {
        Some(rest) => rest.to_string(),
        None => path,
    }
}

/// The secrets and SSH agents the flags lend the build (agents for key files start now and
/// stop when the session drops).
fn session(args: &BuildArgs) -> anyhow::Result<kiln::builder::ClientSession> {
    let secrets = args
        .secrets
        .iter()
        .map(|flag| kiln::session::SecretSpec::parse(flag))
        .collect::<Result<Vec<_>, _>>()?;
    let ssh = args
        .ssh
        .iter()
        .map(|flag| kiln::session::SshSpec::parse(flag))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(kiln::builder::ClientSession {
        secrets: kiln::session::Secrets::new(secrets),
        ssh: kiln::session::SshAgents::start(ssh)?,
    })
}

/// `--build-arg` values: `K=V`, or `K` alone taking `K` from kiln's environment (skipped when
/// unset, as docker does).
fn build_args(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for arg in raw {
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), std::env::var(arg).ok()),
        };
        if key.is_empty() {
            bail!("--build-arg {arg:?} has no name: write --build-arg NAME=VALUE");
        }
        if let Some(value) = value {
            out.insert(key.to_string(), value);
        }
    }
    Ok(out)
}

/// What a dry run found, as text: header, the remote sources the build would fetch, parallel
/// groups, then each needed stage with its instructions, the context files each COPY/ADD reads,
/// and each RUN's mounts, network and security.
fn describe(
    checked: &Checked,
    input: &Input,
    args: &BuildArgs,
    platforms: &[kiln::oci::Platform],
) -> String {
    let plan = &checked.plan;
    let dockerfile = input.name.as_str();
    let tags = &args.tags;
    let stages = &plan.resolved.stages;
    let stage_name = |id: usize| {
        stages
            .get(id)
            .map_or_else(|| format!("#{id}"), |s| s.display_name())
    };
    let mut out = String::new();
    let _ = writeln!(out, "dockerfile  {dockerfile}");
    if let Some(ctx) = &plan.context {
        let ignore = ctx.ignore_file().map_or_else(
            || "no .dockerignore".to_string(),
            |p| format!("after {}", as_given(&input.shown_context, p)),
        );
        let _ = writeln!(
            out,
            "context     {} ({} entries {ignore})",
            input.shown_context.display(),
            ctx.entries().len()
        );
    }
    if !tags.is_empty() {
        let _ = writeln!(out, "tags        {}", tags.join(", "));
    }
    // Every platform's plan was checked; the stages below are the first's.
    match platforms {
        [] => {}
        [platform] => {
            let _ = writeln!(out, "platform    {platform}");
        }
        [first, ..] => {
            let shown: Vec<String> = platforms.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "platforms   {} (stages shown for {first})",
                shown.join(", ")
            );
        }
    }
    let _ = writeln!(
        out,
        "target      {} ({} of {} stages needed)",
        stage_name(plan.target),
        plan.order.len(),
        stages.len()
    );
    if !plan.images.is_empty() {
        let _ = writeln!(out, "images      {}", plan.images.join(", "));
    }
    let skipped: Vec<String> = stages
        .iter()
        .filter(|s| !plan.order.contains(&s.index))
        .map(|s| s.display_name())
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            out,
            "skipped     {} (not needed by the target)",
            skipped.join(", ")
        );
    }
    if let Some(epoch) = checked.source_date_epoch {
        let _ = writeln!(out, "epoch       {epoch} (SOURCE_DATE_EPOCH)");
    } else if let Some(from) = &checked.source_date_epoch_from {
        let _ = writeln!(
            out,
            "epoch       the time of {} (SOURCE_DATE_EPOCH; the build asks it)",
            escape_line(from)
        );
    }
    for (i, source) in checked.remote.iter().enumerate() {
        let label = if i == 0 { "remote" } else { "" };
        let state = match source.kind {
            RemoteKind::Image if source.stored => " (in the store)",
            RemoteKind::Image => {
                " (not in the store: the build pulls it; its ENV and ONBUILD are not checked)"
            }
            RemoteKind::Context => " (downloaded)",
            _ => "",
        };
        let _ = writeln!(
            out,
            "{label:<12}{} {}{state}",
            source.kind.as_str(),
            source.source
        );
    }
    let _ = writeln!(
        out,
        "\nparallel groups (a group's stages can build at the same time):"
    );
    for (i, group) in plan.groups.iter().enumerate() {
        let names: Vec<String> = group.iter().map(|&id| stage_name(id)).collect();
        let _ = writeln!(out, "  {}  {}", i + 1, names.join(", "));
    }
    for &id in &plan.order {
        let Some(stage) = stages.get(id) else {
            continue;
        };
        let _ = writeln!(
            out,
            "\nstage {}  FROM {}  ({dockerfile}:{})",
            stage.display_name(),
            stage.base_name,
            stage.span.start.line
        );
        for (index, instruction) in stage.instructions.iter().enumerate() {
            let _ = writeln!(out, "  {:<4} {instruction}", instruction.span().start.line);
            if let Instruction::Run(run) = instruction {
                // The mounts with their values expanded (the line above shows them as written).
                for mount in &run.mounts {
                    let _ = writeln!(out, "       mount {mount}");
                }
                if let Some(network) = run.network {
                    let _ = writeln!(out, "       network {}", network.as_str());
                }
                if let Some(security) = run.security {
                    let _ = writeln!(out, "       security {}", security.as_str());
                }
            }
            let reads = plan
                .context_reads
                .iter()
                .find(|r| r.stage == id && r.instruction == index);
            for source in reads.iter().flat_map(|r| &r.sources) {
                let shown: Vec<&str> = source
                    .paths
                    .iter()
                    .take(LISTED_FILES)
                    .map(String::as_str)
                    .collect();
                let more = source.paths.len().saturating_sub(LISTED_FILES);
                let _ = write!(out, "       reads {}: {}", source.source, shown.join(" "));
                if more > 0 {
                    let _ = write!(out, " ... and {more} more");
                }
                out.push('\n');
            }
        }
    }
    out
}
