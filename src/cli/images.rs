//! The image commands, with docker's output: `images`, `tag`, `rmi`, `inspect`, `history`,
//! `prune`, `df`.

use super::template::{Template, escape_strings, render_rows};
use super::term::{out, outln, write_docker_json, write_json, write_stdout};
use anyhow::Context as _;
use clap::Args;
use kiln::archive::view::{self, created_since, ellipsis, human_size};
use kiln::error::{EscapedChain, escape_line};
use kiln::git::{GitCache, GitOptions};
use kiln::oci::timestamp::{format_go_utc, format_rfc3339, now_seconds};
use kiln::store::ImageName;
use kiln::store::{ImageSummary, PruneOptions, Store, StoredImage};
use serde_json::{Map, Value, json};
use std::fmt;
use std::io::BufRead as _;
use std::path::Path;

/// Several arguments failed (docker goes on with the rest and reports each): printed as one
/// `error:` line per failure, each an escaped chain ([`EscapedChain`]).
#[derive(Debug)]
struct Failures(Vec<String>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\nerror: "))
    }
}

impl std::error::Error for Failures {}

fn open(root: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(root)?)
}

/// `12` hex digits, or the full `sha256:...` with `--no-trunc` (docker's `TruncateID`).
fn display_id(id: &kiln::oci::Digest, truncate: bool) -> String {
    if truncate {
        id.short().to_string()
    } else {
        id.to_string()
    }
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images with this name (`repo` or `repo:tag`; `*` and `?` match within a path
    /// component).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Format output with a Go-style template: `table` (default), `json`, or e.g.
    /// `'{{.Repository}}:{{.Tag}}'`. Fields: .ID .Repository .Tag .Digest .CreatedSince
    /// .CreatedAt .Size .Containers .VirtualSize .SharedSize .UniqueSize.
    #[arg(long)]
    format: Option<String>,
}

const IMAGE_FIELDS: [&str; 11] = [
    "Containers",
    "CreatedAt",
    "CreatedSince",
    "Digest",
    "ID",
    "Repository",
    "SharedSize",
    "Size",
    "Tag",
    "UniqueSize",
    "VirtualSize",
];

/// `docker images`.
pub fn images(root: &Path, args: ImagesArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let format = match args.format.as_deref() {
        None | Some("") | Some("table") if args.quiet => "{{.ID}}".to_string(),
        None | Some("") | Some("table") if args.digests => "table {{.Repository}}\\t{{.Tag}}\\t{{.Digest}}\\t{{.ID}}\\t{{if .CreatedSince}}{{.CreatedSince}}{{else}}N/A{{end}}\\t{{.Size}}".to_string(),
        None | Some("") | Some("table") => "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{if .CreatedSince}}{{.CreatedSince}}{{else}}N/A{{end}}\\t{{.Size}}".to_string(),
        Some(custom) if custom.starts_with("table") && args.digests && !custom.contains("{{.Digest}}") => {
            format!("{custom}\\t{{{{.Digest}}}}")
        }
        Some(custom) => custom.to_string(),
    };
    let show_digest = args.digests || format.contains("{{.Digest}}");
    let filter = args.reference.as_deref().map(NameFilter::new).transpose()?;
    let now = now_seconds();
    let mut rows = Vec::new();
    for summary in store.images()? {
        for (repository, tag) in image_rows(&summary.image, filter.as_ref()) {
            // A multi-platform image is its index: its ID and digest are the index's.
            let manifest_digest = match &summary.index {
                Some(index) => &index.digest,
                None => &summary.image.manifest_digest,
            };
            let digest = match (&repository, show_digest) {
                (Some(_), true) => manifest_digest.to_string(),
                _ => "<none>".to_string(),
            };
            rows.push(image_row(
                &summary,
                repository.as_deref().unwrap_or("<none>"),
                tag.as_deref().unwrap_or("<none>"),
                &digest,
                !args.no_trunc,
                now,
            ));
        }
    }
    let header = json!({
        "ID": "IMAGE ID",
        "Repository": "REPOSITORY",
        "Tag": "TAG",
        "Digest": "DIGEST",
        "CreatedSince": "CREATED",
        "CreatedAt": "CREATED AT",
        "Size": "SIZE",
        "Containers": "CONTAINERS",
        "VirtualSize": "SIZE",
        "SharedSize": "SHARED SIZE",
        "UniqueSize": "UNIQUE SIZE",
    });
    print_rows(
        &format,
        &render_rows(&format, &rows, &header, &IMAGE_FIELDS)?,
    )?;
    Ok(())
}

/// `docker images REPOSITORY[:TAG]`: distribution's `FamiliarMatch` (a glob on the familiar
/// name, or on the familiar `name:tag`).
struct NameFilter {
    pattern: globset::GlobMatcher,
}

impl NameFilter {
    fn new(pattern: &str) -> anyhow::Result<NameFilter> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .with_context(|| format!("invalid image name filter {pattern:?}"))?;
        Ok(NameFilter {
            pattern: glob.compile_matcher(),
        })
    }

    fn matches(&self, name: &ImageName) -> bool {
        self.pattern.is_match(name.familiar_repository()) || self.pattern.is_match(name.familiar())
    }
}

/// The (repository, tag) rows of one image: one per tag, repositories sorted; one `<none>` row
/// for an untagged image (none at all when a name filter is given, as docker).
fn image_rows(
    image: &StoredImage,
    filter: Option<&NameFilter>,
) -> Vec<(Option<String>, Option<String>)> {
    if image.names.is_empty() {
        return if filter.is_some() {
            Vec::new()
        } else {
            vec![(None, None)]
        };
    }
    let mut rows: Vec<(Option<String>, Option<String>)> = image
        .names
        .iter()
        .filter(|n| filter.is_none_or(|f| f.matches(n)))
        .map(|n| {
            (
                Some(n.familiar_repository().to_string()),
                Some(n.tag().to_string()),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn image_row(
    summary: &ImageSummary,
    repository: &str,
    tag: &str,
    digest: &str,
    truncate: bool,
    now: i64,
) -> Value {
    let image = &summary.image;
    let created = image.created_seconds();
    // Inserted in sorted order: `{{json .}}` prints keys sorted, as Go marshals a map.
    let mut row = Map::new();
    row.insert("Containers".into(), summary.containers.to_string().into());
    row.insert(
        "CreatedAt".into(),
        created.map(format_go_utc).unwrap_or_default().into(),
    );
    row.insert(
        "CreatedSince".into(),
        created
            .map(|c| created_since(c, now))
            .unwrap_or_default()
            .into(),
    );
    row.insert("Digest".into(), digest.into());
    let id = summary
        .index
        .as_ref()
        .map_or(&image.id, |index| &index.digest);
    row.insert("ID".into(), display_id(id, truncate).into());
    row.insert("Repository".into(), repository.into());
    row.insert("SharedSize".into(), "N/A".into());
    row.insert("Size".into(), human_size(image.size(), 3).into());
    row.insert("Tag".into(), tag.into());
    row.insert("UniqueSize".into(), "N/A".into());
    row.insert("VirtualSize".into(), human_size(image.size(), 4).into());
    Value::Object(row)
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag (name or ID).
    source: String,
    /// The new name (`name[:tag]`; `latest` when no tag is given).
    target: String,
}

/// `docker tag SOURCE TARGET`.
pub fn tag(root: &Path, args: TagArgs) -> anyhow::Result<()> {
    open(root)?.tag_image(&args.source, &args.target)?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images to remove (names or IDs).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// Force removal: delete by ID an image with several tags, or one a stopped container uses.
    #[arg(short, long)]
    force: bool,
}

/// `docker rmi`: every image in turn; failures are reported after the rest is done.
pub fn rmi(root: &Path, args: RmiArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let mut failures = Vec::new();
    for image in &args.images {
        match store.remove_image(image, args.force) {
            Ok(removals) => {
                for removal in removals {
                    outln!("{}", escape_line(&removal.to_string()))?;
                }
            }
            Err(err) => failures.push(EscapedChain(&err).to_string()),
        }
    }
    finish(failures)
}

fn finish(failures: Vec<String>) -> anyhow::Result<()> {
    if failures.is_empty() {
        Ok(())
    } else {
        let shown = format!("error: {}", Failures(failures));
        Err(super::report::SourceError::new(shown).into())
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images to inspect (names or IDs).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// Format each image with a Go-style template, e.g. `'{{.Id}}'` or `'{{json .Config}}'`.
    #[arg(short, long)]
    format: Option<String>,
    /// Of a multi-platform image, this platform's image (`OS/ARCH[/VARIANT]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

impl InspectArgs {
    /// The names or IDs given.
    pub fn names(&self) -> &[String] {
        &self.images
    }

    /// `--format`.
    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
}

/// A `--platform` flag's value, normalised.
fn platform_flag(flag: Option<&str>) -> anyhow::Result<Option<kiln::oci::Platform>> {
    Ok(flag
        .map(kiln::oci::Platform::parse_normalized)
        .transpose()?)
}

const INSPECT_FIELDS: [&str; 16] = [
    "Id",
    "RepoTags",
    "RepoDigests",
    "Parent",
    "Comment",
    "Created",
    "DockerVersion",
    "Author",
    "Config",
    "Architecture",
    "Variant",
    "Os",
    "OsVersion",
    "Size",
    "RootFS",
    "Metadata",
];

/// `docker image inspect`: a JSON array (4-space indent), or one template line per image.
pub fn inspect(root: &Path, args: InspectArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let template = match args.format.as_deref() {
        Some(format) if format != "json" => {
            let text = format.replace("\\t", "\t").replace("\\n", "\n");
            let template = Template::parse(&text)?;
            let mut known = INSPECT_FIELDS.to_vec();
            known.push("Descriptor");
            template.check_fields(&known)?;
            Some(template)
        }
        _ => None,
    };
    let platform = platform_flag(args.platform.as_deref())?;
    let mut failures = Vec::new();
    let mut documents = Vec::new();
    for name in &args.images {
        match store.resolve_platform(name, platform.as_ref()) {
            Ok(image) => documents.push(view::inspect(&image)),
            Err(err) => failures.push(EscapedChain(&err).to_string()),
        }
    }
    match template {
        Some(template) => {
            for document in &documents {
                // The document's strings escaped before the template sees them: a label with a
                // newline cannot print a line of its own.
                let value = escape_strings(&with_docker_defaults(serde_json::to_value(document)?));
                outln!("{}", template.render(&value)?)?;
            }
        }
        None => {
            write_docker_json(&documents)?;
        }
    }
    finish(failures)
}

/// Fills in what docker's inspect structs always have, even when the JSON leaves it out, with
/// the value Go prints for it: `""` for strings, `[]` for lists, `map[]` for maps, `false`, and
/// `<nil>` for the health check. Templates then print what docker prints instead of
/// `<no value>`.
fn with_docker_defaults(mut value: Value) -> Value {
    let Value::Object(map) = &mut value else {
        return value;
    };
    for key in [
        "Parent",
        "Comment",
        "Created",
        "DockerVersion",
        "Author",
        "Variant",
        "OsVersion",
    ] {
        map.entry(key).or_insert_with(|| json!(""));
    }
    if let Some(Value::Object(config)) = map.get_mut("Config") {
        let defaults = [
            ("User", json!("")),
            ("ExposedPorts", json!({})),
            ("Env", json!([])),
            ("Entrypoint", json!([])),
            ("Cmd", json!([])),
            ("Volumes", json!({})),
            ("WorkingDir", json!("")),
            ("Labels", json!({})),
            ("StopSignal", json!("")),
            ("ArgsEscaped", json!(false)),
            ("Healthcheck", Value::Null),
            ("OnBuild", json!([])),
            ("Shell", json!([])),
        ];
        for (key, default) in defaults {
            config.entry(key).or_insert(default);
        }
    }
    value
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The image (name or ID).
    image: String,
    /// Print sizes and dates in human readable format.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    human: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Format output with a Go-style template (fields: .ID .CreatedSince .CreatedAt .CreatedBy
    /// .Size .Comment).
    #[arg(long)]
    format: Option<String>,
    /// Of a multi-platform image, this platform's image (`OS/ARCH[/VARIANT]`; default: this
    /// machine's).
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
}

const HISTORY_FIELDS: [&str; 6] = [
    "Comment",
    "CreatedAt",
    "CreatedBy",
    "CreatedSince",
    "ID",
    "Size",
];

/// `docker history`.
pub fn history(root: &Path, args: HistoryArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let platform = platform_flag(args.platform.as_deref())?;
    let image = store.resolve_platform(&args.image, platform.as_ref())?;
    let format = match args.format.as_deref() {
        None | Some("") | Some("table") if args.quiet => "{{.ID}}",
        None | Some("") | Some("table") if !args.human => {
            "table {{.ID}}\\t{{.CreatedAt}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}"
        }
        None | Some("") | Some("table") => {
            "table {{.ID}}\\t{{.CreatedSince}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}"
        }
        Some(custom) => custom,
    };
    let truncate = !args.no_trunc;
    let now = now_seconds();
    let rows: Vec<Value> = view::history(&image)?
        .into_iter()
        .map(|row| {
            let created_at = row.created.map(format_rfc3339).unwrap_or_default();
            let created_since = match (row.created, args.human) {
                (Some(created), true) => created_since(created, now),
                (Some(_), false) => created_at.clone(),
                (None, _) => "N/A".to_string(),
            };
            let created_by = row.created_by.replace('\t', " ");
            json!({
                "ID": row.id.map_or_else(|| "<missing>".to_string(), |id| display_id(&id, truncate)),
                "CreatedSince": created_since,
                "CreatedAt": created_at,
                "CreatedBy": if truncate { ellipsis(&created_by, 45) } else { created_by },
                "Size": if args.human { human_size(row.size, 3) } else { row.size.to_string() },
                "Comment": row.comment,
            })
        })
        .collect();
    let header = json!({
        "ID": "IMAGE",
        "CreatedSince": "CREATED",
        "CreatedAt": "CREATED AT",
        "CreatedBy": "CREATED BY",
        "Size": "SIZE",
        "Comment": "COMMENT",
    });
    print_rows(
        format,
        &render_rows(format, &rows, &header, &HISTORY_FIELDS)?,
    )?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, not just untagged ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Keep the `RUN --mount=type=cache` directories (removed by default when no build holds
    /// them, as `docker builder prune` removes them).
    #[arg(long)]
    keep_cache_mounts: bool,
}

/// `docker image prune` plus kiln's own garbage: unreferenced blobs and snapshots, staging
/// files of dead processes.
pub fn prune(root: &Path, args: PruneArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    if !args.force {
        let images = if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        let cache_mounts = if args.keep_cache_mounts {
            ""
        } else {
            "\n  - all build cache mounts (RUN --mount=type=cache) no build is using"
        };
        out!(
            "WARNING! This will remove:\n  - {images}\n  - all blobs and layer snapshots no \
             remaining image uses\n  - staging files left by killed kiln processes\n  - all git \
             repositories and checkouts, and URL records, no build is using{cache_mounts}\n\
             Are you sure you want to continue? [y/N] "
        )?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            outln!()?;
            anyhow::bail!("prune cancelled: nothing was removed");
        }
    }
    // One hold for the images and the remote sources' caches: no build runs meanwhile, so
    // nothing is removed under one (`docker builder prune` keeps what a build holds).
    let held = store.collection()?;
    let report = store.prune_held(&held, PruneOptions { all: args.all })?;
    let git = GitCache::new(&store, GitOptions::default()).prune(&held)?;
    let records = kiln::fetch::prune_records(&store, &held)?;
    drop(held);
    let cache_mounts = if args.keep_cache_mounts {
        kiln::store::CacheMountPrune::default()
    } else {
        store.prune_cache_mounts()?
    };
    let mut out = String::new();
    if !report.removals.is_empty() {
        out.push_str("Deleted Images:\n");
        for removal in &report.removals {
            // docker's prune report spells these in lower case.
            let line = removal.to_string();
            let line = line
                .replacen("Untagged:", "untagged:", 1)
                .replacen("Deleted:", "deleted:", 1);
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
    }
    let counts = [
        (report.blobs, "unreferenced blob", "unreferenced blobs"),
        (report.snapshots, "layer snapshot", "layer snapshots"),
        (
            report.staging,
            "stale staging entry",
            "stale staging entries",
        ),
        (cache_mounts.removed, "cache mount", "cache mounts"),
        (git.repositories, "git repository", "git repositories"),
        (git.checkouts, "git checkout", "git checkouts"),
        (records.records, "URL record", "URL records"),
    ];
    let parts: Vec<String> = counts
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect();
    if !parts.is_empty() {
        out.push_str(&format!("Deleted {}\n\n", parts.join(", ")));
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(
            report.reclaimed + cache_mounts.reclaimed + git.reclaimed + records.reclaimed,
            4
        )
    ));
    write_stdout(&out)?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Format output with a Go-style template (fields: .Type .TotalCount .Active .Size
    /// .Reclaimable).
    #[arg(long)]
    format: Option<String>,
}

/// `docker system df`.
pub fn df(root: &Path, args: DfArgs) -> anyhow::Result<()> {
    let store = open(root)?;
    let usage = store.disk_usage()?;
    let git = GitCache::new(&store, GitOptions::default()).usage()?;
    let records = kiln::fetch::records_usage(&store)?;
    let row = |kind: &str, usage: kiln::store::Usage| {
        let reclaimable = match usage
            .reclaimable
            .saturating_mul(100)
            .checked_div(usage.size)
        {
            Some(percent) => format!("{} ({percent}%)", human_size(usage.reclaimable, 4)),
            None => human_size(usage.reclaimable, 4),
        };
        json!({
            "Type": kind,
            "TotalCount": usage.total.to_string(),
            "Active": usage.active.to_string(),
            "Size": human_size(usage.size, 4),
            "Reclaimable": reclaimable,
        })
    };
    let rows = [
        row("Images", usage.images),
        row("Containers", usage.containers),
        row("Layer snapshots", usage.snapshots),
        row("Cache mounts", usage.cache_mounts),
        row("Git repositories", git.repositories),
        row("Git checkouts", git.checkouts),
        row("URL records", records),
    ];
    let header = json!({
        "Type": "TYPE",
        "TotalCount": "TOTAL",
        "Active": "ACTIVE",
        "Size": "SIZE",
        "Reclaimable": "RECLAIMABLE",
    });
    let format = match args.format.as_deref() {
        None | Some("") | Some("table") => {
            "table {{.Type}}\\t{{.TotalCount}}\\t{{.Active}}\\t{{.Size}}\\t{{.Reclaimable}}"
        }
        Some(custom) => custom,
    };
    let known = ["Active", "Reclaimable", "Size", "TotalCount", "Type"];
    print_rows(format, &render_rows(format, &rows, &header, &known)?)
}

/// Prints what [`render_rows`] made of `format`: `json` as JSON ([`write_json`]), anything else
/// as text (its cells were escaped before the template saw them).
fn print_rows(format: &str, rendered: &str) -> anyhow::Result<()> {
    if format == "json" {
        write_json(rendered)?;
    } else {
        write_stdout(rendered)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_print_one_error_line_each() {
        let err = Failures(vec![
            "no such image: a:latest".into(),
            "no such image: b:latest".into(),
        ]);
        assert_eq!(
            format!("error: {err}"),
            "error: no such image: a:latest\nerror: no such image: b:latest"
        );
    }
}
