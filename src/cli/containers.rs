//! Containers as objects, with docker's commands, flags, output and messages: `ps`, `logs`,
//! `stop`, `kill`, `start`, `restart`, `wait`, `rm`, `rename`, `inspect` of containers,
//! `container prune`, and the hidden `container-supervise` that `kiln run -d` and `kiln start`
//! launch (see `kiln::container::supervisor`).

use super::template::render_rows;
use super::term::{errln, out, outln, write_docker_json, write_json, write_stdout};
use anyhow::Context as _;
use clap::{Args, Subcommand};
use kiln::archive::view::{created_since, ellipsis, human_duration, human_size};
use kiln::container::logs::{Entry, LogReader, Stream, log_size};
use kiln::container::{ContainerError, RunOptions, lifecycle, supervisor};
use kiln::error::{EscapedChain, escape_line};
use kiln::oci::timestamp::{format_go_utc, now_seconds, parse_rfc3339};
use kiln::store::{ContainerRecord, ContainerState, Store};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{BufRead as _, Write as _};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// docker's exit code when the daemon fails.
const KILN_FAILED: u8 = 125;
/// How often `logs -f` and `start -a` look for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// docker's zero time, for a container that never started or ended.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Starts container `id`'s supervisor (kiln's own binary, in a new session) and waits until it
/// reports the container started.
pub fn launch_supervisor(
    root: &Path,
    id: &str,
    stdin: Option<std::os::fd::OwnedFd>,
) -> Result<(), ContainerError> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    use std::os::unix::process::CommandExt as _;
    // This very binary (whatever its path now), named `kiln` in `ps`.
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg0("kiln")
        .arg("--root")
        .arg(&root)
        .arg("container-supervise")
        .arg(id);
    if stdin.is_some() {
        command.arg("--stdin");
    }
    supervisor::launch(command, stdin)
}

/// The hidden `kiln container-supervise ID`.
#[derive(Debug, Args)]
pub struct SuperviseArgs {
    /// The container's ID.
    id: String,
    /// Give this process's standard input to the container's first start.
    #[arg(long)]
    stdin: bool,
}

/// The supervisor's process: reports on stdout (the launcher's pipe), then points stdout at
/// /dev/null, and runs the container until it stops for good.
pub fn supervise(root: &Path, args: SuperviseArgs) -> ExitCode {
    let report = |report: &supervisor::Report| {
        let mut line = serde_json::to_string(report).unwrap_or_default();
        line.push('\n');
        // The report is a protocol, not text for a terminal.
        #[allow(clippy::disallowed_methods)]
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(line.as_bytes());
        let _ = stdout.flush();
        if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(null.as_fd());
        }
    };
    let stdin = if args.stdin {
        std::io::stdin().as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    let result = Store::open(root)
        .map_err(ContainerError::from)
        .and_then(|store| supervisor::supervise(&store, &args.id, stdin, report));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(KILN_FAILED),
    }
}

/// Runs `each` for every reference, printing docker's `Error response from daemon: …` for the
/// ones that fail; exit 1 when any failed (docker's CLI).
fn for_each(
    references: &[String],
    mut each: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut failed = false;
    for reference in references {
        if let Err(err) = each(reference) {
            failed = true;
            errln!("Error response from daemon: {}", message(&err))?;
        }
    }
    if failed {
        return Err(super::report::ExitQuietly.into());
    }
    Ok(())
}

/// An error's chain, escaped, on one line.
fn message(err: &anyhow::Error) -> String {
    let err: &(dyn std::error::Error + 'static) = err.as_ref();
    EscapedChain(err).to_string()
}

/// docker's "No such container: X".
fn find(store: &Store, reference: &str) -> anyhow::Result<ContainerRecord> {
    match lifecycle::find(store, reference) {
        Err(ContainerError::Store(kiln::store::StoreError::NoContainer(_))) => {
            anyhow::bail!("No such container: {}", escape_line(reference))
        }
        other => Ok(other?),
    }
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long, value_name = "N")]
    last: Option<usize>,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    latest: bool,
    /// Filter output: `status=…`, `name=…`, `id=…`.
    #[arg(short, long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
    /// Pretty-print containers using a Go template, or `json`.
    #[arg(long)]
    format: Option<String>,
}

const PS_FIELDS: [&str; 14] = [
    "ID",
    "Image",
    "Command",
    "CreatedAt",
    "RunningFor",
    "Ports",
    "State",
    "Status",
    "Size",
    "Names",
    "Labels",
    "Mounts",
    "Networks",
    "LocalVolumes",
];

/// `-f KEY=VALUE` of `ps`: the same key ORs, different keys AND (docker's filters).
struct Filters(Vec<(String, String)>);

impl Filters {
    fn parse(values: &[String]) -> anyhow::Result<Filters> {
        let mut filters = Vec::new();
        for value in values {
            let (key, wanted) = value
                .split_once('=')
                .with_context(|| format!("bad format of filter (expected name=value): {value}"))?;
            match key {
                "status" => {
                    const STATES: [&str; 7] = [
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ];
                    if !STATES.contains(&wanted) {
                        anyhow::bail!(
                            "Invalid filter 'status={wanted}': Unrecognised filter value for \
                             status"
                        );
                    }
                }
                "name" | "id" => {}
                _ => anyhow::bail!("Invalid filter '{key}'"),
            }
            filters.push((key.to_string(), wanted.to_string()));
        }
        Ok(Filters(filters))
    }

    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    fn matches(&self, record: &ContainerRecord) -> anyhow::Result<bool> {
        for key in ["status", "name", "id"] {
            let wanted: Vec<&str> = self
                .0
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let mut any = false;
            for value in wanted {
                any |= match key {
                    "status" => record.status().as_str() == value,
                    // docker matches names as a regular expression against "/name".
                    "name" => regex::Regex::new(value)
                        .with_context(|| format!("invalid name filter {value:?}"))?
                        .is_match(&format!("/{}", record.name)),
                    _ => record.id.starts_with(value),
                };
            }
            if !any {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

pub fn ps(root: &Path, args: PsArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let filters = Filters::parse(&args.filters)?;
    let all = args.all || filters.has("status") || args.last.is_some() || args.latest;
    let mut records = lifecycle::containers(&store)?;
    records.sort_by(|a, b| created_of(b).cmp(&created_of(a)).then(a.id.cmp(&b.id)));
    let mut kept = Vec::new();
    for record in records {
        if (all || record.is_running()) && filters.matches(&record)? {
            kept.push(record);
        }
    }
    if let Some(last) = args.last.or(args.latest.then_some(1)) {
        kept.truncate(last);
    }
    let format = match args.format.as_deref() {
        None | Some("") | Some("table") if args.quiet => "{{.ID}}".to_string(),
        None | Some("") | Some("table") => "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}".to_string(),
        Some(custom) => custom.to_string(),
    };
    let now = now_seconds();
    let rows: Vec<Value> = kept
        .iter()
        .map(|record| ps_row(&store, record, !args.no_trunc, now))
        .collect();
    let header = json!({
        "ID": "CONTAINER ID",
        "Image": "IMAGE",
        "Command": "COMMAND",
        "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED",
        "Ports": "PORTS",
        "State": "STATE",
        "Status": "STATUS",
        "Size": "SIZE",
        "Names": "NAMES",
        "Labels": "LABELS",
        "Mounts": "MOUNTS",
        "Networks": "NETWORKS",
        "LocalVolumes": "LOCAL VOLUMES",
    });
    let rendered = render_rows(&format, &rows, &header, &PS_FIELDS)?;
    if format == "json" {
        write_json(&rendered)?;
    } else {
        write_stdout(&rendered)?;
    }
    Ok(())
}

fn created_of(record: &ContainerRecord) -> i64 {
    parse_rfc3339(&record.created).unwrap_or(0)
}

fn seconds_of(time: Option<&String>) -> Option<i64> {
    time.and_then(|t| parse_rfc3339(t))
}

/// One `docker ps` row.
fn ps_row(store: &Store, record: &ContainerRecord, truncate: bool, now: i64) -> Value {
    let options = lifecycle::read_options(store, record).unwrap_or_default();
    let command = command_line(&record.config.args);
    let command = if truncate {
        ellipsis(&command, 20)
    } else {
        command
    };
    let id = if truncate {
        record.id.chars().take(12).collect()
    } else {
        record.id.clone()
    };
    json!({
        "ID": id,
        "Image": record.image_name,
        "Command": format!("\"{command}\""),
        "CreatedAt": format_go_utc(created_of(record)),
        "RunningFor": created_since(created_of(record), now),
        // docker lists a container's published ports while it runs.
        "Ports": if record.status() == ContainerState::Running {
            record.run.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        } else {
            String::new()
        },
        "State": record.status().as_str(),
        "Status": status_text(record, now),
        "Size": human_size(0, 3),
        "Names": record.name,
        "Labels": "",
        "Mounts": options.volumes.iter().map(|m| ellipsis(&m.destination, 15)).collect::<Vec<_>>().join(","),
        "Networks": network_name(&options),
        "LocalVolumes": "0",
    })
}

/// The command as `docker ps` shows it: the words joined, one with white space or quotes in
/// single quotes.
fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|arg| {
            if arg.is_empty()
                || arg
                    .chars()
                    .any(|c| c.is_whitespace() || "'\"\\$`".contains(c))
            {
                format!("'{}'", arg.replace('\'', "'\\''"))
            } else {
                arg.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn network_name(options: &RunOptions) -> String {
    format!("{:?}", options.network).to_ascii_lowercase()
}

/// docker's STATUS column: `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`,
/// `Restarting (1) 1 second ago`.
fn status_text(record: &ContainerRecord, now: i64) -> String {
    let code = record.run.exit_code.unwrap_or(0);
    let finished_ago = || {
        seconds_of(record.run.finished_at.as_ref())
            .map_or_else(String::new, |at| format!(" {}", created_since(at, now)))
    };
    match record.status() {
        ContainerState::Created => "Created".to_string(),
        ContainerState::Running => {
            let since = seconds_of(record.run.started_at.as_ref()).unwrap_or(now);
            format!("Up {}", human_duration(now.saturating_sub(since)))
        }
        ContainerState::Restarting => format!("Restarting ({code}){}", finished_ago()),
        ContainerState::Exited => format!("Exited ({code}){}", finished_ago()),
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output (until the container stops).
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs (`all` by default).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs since a timestamp (RFC 3339 or Unix seconds) or a relative time (`42m`).
    #[arg(long)]
    since: Option<String>,
    /// Show logs before a timestamp or a relative time.
    #[arg(long)]
    until: Option<String>,
    /// The container.
    container: String,
}

/// A `--since`/`--until` value as Unix seconds: RFC 3339, Unix seconds (with a fraction), or
/// a Go duration before now (`10s`, `42m`, `2h`, `1h30m`).
fn parse_time_bound(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Some(seconds) = parse_rfc3339(text) {
        return Ok(seconds);
    }
    if let Ok(seconds) = text.parse::<f64>() {
        #[allow(clippy::cast_possible_truncation)] // whole seconds are enough
        return Ok(seconds as i64);
    }
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: i64 = number
            .parse()
            .with_context(|| format!("invalid time value {text:?}"))?;
        number.clear();
        total += value
            * match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => anyhow::bail!("invalid time value {text:?}"),
            };
    }
    if !number.is_empty() || total == 0 && !text.starts_with('0') {
        anyhow::bail!("invalid time value {text:?}");
    }
    Ok(now - total)
}

/// Writes entries to stdout and stderr as their streams say: the container's own bytes, not
/// kiln's text (docker's `logs` passes them through raw).
fn print_entries(entries: &[Entry], timestamps: bool) -> anyhow::Result<()> {
    #[allow(clippy::disallowed_methods)] // The container's own output.
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    for entry in entries {
        let sink: &mut dyn std::io::Write = match entry.stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        if timestamps {
            sink.write_all(entry.time.as_bytes())?;
            sink.write_all(b" ")?;
        }
        sink.write_all(entry.log.as_bytes())?;
    }
    stdout.flush()?;
    stderr.flush()?;
    Ok(())
}

pub fn logs(root: &Path, args: LogsArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let record = find(&store, &args.container)?;
    let now = now_seconds();
    let since = args
        .since
        .as_deref()
        .map(|t| parse_time_bound(t, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|t| parse_time_bound(t, now))
        .transpose()?;
    let tail = match args.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<i64>()
                .with_context(|| format!("invalid value for --tail: {n:?}"))?,
        )
        .filter(|&n| n >= 0)
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let in_window = |entry: &Entry| {
        let at = parse_rfc3339(&entry.time).unwrap_or(0);
        since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u)
    };
    let path = lifecycle::log_path(&store, &record.id)?;
    // Only the last `--tail` entries are held; without it each batch is printed as read.
    let mut shown: VecDeque<Entry> = VecDeque::new();
    let reader = LogReader::read_all(&path, |entries| {
        let entries = entries.into_iter().filter(|e| in_window(e));
        match tail {
            None => print_entries(&entries.collect::<Vec<_>>(), args.timestamps)
                .map_err(std::io::Error::other)?,
            Some(n) => {
                for entry in entries {
                    shown.push_back(entry);
                    if shown.len() > n {
                        shown.pop_front();
                    }
                }
            }
        }
        Ok(())
    })
    .context("reading the container's log")?;
    print_entries(shown.make_contiguous(), args.timestamps)?;
    if let Some(mut reader) = reader.filter(|_| args.follow && until.is_none()) {
        follow(&store, &record.id, &mut reader, args.timestamps)?;
    }
    Ok(())
}

/// Prints what the log gains until the container stops (then what it wrote last).
fn follow(store: &Store, id: &str, reader: &mut LogReader, timestamps: bool) -> anyhow::Result<()> {
    loop {
        let running = store.container(id).is_ok_and(|r| r.is_running());
        let entries = reader.read_new()?;
        print_entries(&entries, timestamps)?;
        if !running {
            return Ok(());
        }
        if entries.is_empty() {
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for stop before killing it (default: the container's --stop-timeout,
    /// else 10).
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    time: Option<i64>,
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

fn stop_timeout(store: &Store, record: &ContainerRecord, time: Option<i64>) -> Duration {
    let seconds = time.unwrap_or_else(|| {
        lifecycle::read_options(store, record)
            .ok()
            .and_then(|o| o.stop_timeout)
            .map_or(i64::from(lifecycle::DEFAULT_STOP_TIMEOUT), i64::from)
    });
    // docker: a negative timeout waits forever; here a day.
    Duration::from_secs(u64::try_from(seconds).unwrap_or(86_400))
}

pub fn stop(root: &Path, args: StopArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    // docker's CLI stops them all at once (each may take its whole timeout), then reports in
    // the order given.
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let stops: Vec<_> = args
            .containers
            .iter()
            .map(|reference| {
                let store = &store;
                scope.spawn(move || -> anyhow::Result<()> {
                    let record = find(store, reference)?;
                    let timeout = stop_timeout(store, &record, args.time);
                    Ok(lifecycle::stop(store, &record.id, timeout)?)
                })
            })
            .collect();
        stops
            .into_iter()
            .map(|stop| {
                stop.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("stopping failed")))
            })
            .collect()
    });
    let mut results = results.into_iter();
    for_each(&args.containers, |reference| {
        results.next().unwrap_or(Ok(()))?;
        outln!("{}", escape_line(reference))?;
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn kill(root: &Path, args: KillArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let signal = match lifecycle::parse_signal(&args.signal) {
        Ok(signal) => signal,
        Err(err) => {
            errln!(
                "Error response from daemon: {}",
                escape_line(&err.to_string())
            )?;
            return Err(super::report::ExitQuietly.into());
        }
    };
    for_each(&args.containers, |reference| {
        let record = find(&store, reference).map_err(|err| {
            anyhow::anyhow!("Cannot kill container: {}: {err}", escape_line(reference))
        })?;
        // docker: the kill that ends it (SIGKILL, or its stop signal) keeps the restart policy
        // from starting it again.
        if signal == nix::sys::signal::Signal::SIGKILL
            || signal == lifecycle::stop_signal(&store, &record)
        {
            lifecycle::mark_stopped(&store, &record.id)?;
        }
        lifecycle::signal(&store, &record.id, signal).map_err(|err| {
            anyhow::anyhow!("Cannot kill container: {}: {err}", escape_line(reference))
        })?;
        outln!("{}", escape_line(reference))?;
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    interactive: bool,
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Starts `record`'s container under a new supervisor unless it runs already.
fn start_one(
    root: &Path,
    record: &ContainerRecord,
    stdin: Option<std::os::fd::OwnedFd>,
) -> anyhow::Result<()> {
    if record.is_running() {
        return Ok(());
    }
    Ok(launch_supervisor(root, &record.id, stdin)?)
}

pub fn start(root: &Path, args: StartArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(root)?;
    if args.attach || args.interactive {
        let [reference] = args.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        let record = find(&store, reference)?;
        let path = lifecycle::log_path(&store, &record.id)?;
        let offset = log_size(&path);
        let stdin = if args.interactive {
            Some(std::io::stdin().as_fd().try_clone_to_owned()?)
        } else {
            None
        };
        if let Err(err) = start_one(root, &record, stdin) {
            let code = err
                .downcast_ref::<ContainerError>()
                .map_or(i32::from(KILN_FAILED), ContainerError::exit_code);
            errln!("Error response from daemon: {}", message(&err))?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(KILN_FAILED)));
        }
        let mut reader = LogReader::open(&path, offset).context("reading the container's log")?;
        follow(&store, &record.id, &mut reader, false)?;
        let code = lifecycle::wait(&store, &record.id)?;
        return Ok(ExitCode::from(u8::try_from(code).unwrap_or(KILN_FAILED)));
    }
    let mut failed = Vec::new();
    for reference in &args.containers {
        let started = find(&store, reference).and_then(|r| start_one(root, &r, None));
        match started {
            Ok(()) => outln!("{}", escape_line(reference))?,
            Err(err) => {
                errln!("Error response from daemon: {}", message(&err))?;
                failed.push(escape_line(reference));
            }
        }
    }
    if !failed.is_empty() {
        errln!("Error: failed to start containers: {}", failed.join(", "))?;
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for stop before killing the container.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    time: Option<i64>,
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn restart(root: &Path, args: RestartArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    for_each(&args.containers, |reference| {
        let record = find(&store, reference)?;
        lifecycle::stop(&store, &record.id, stop_timeout(&store, &record, args.time))?;
        // The old supervisor records the end, then goes: wait for it before starting anew.
        if let Some(owner) = store.container(&record.id)?.run.supervisor {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while owner.is_alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let record = find(&store, reference)?;
        start_one(root, &record, None)?;
        outln!("{}", escape_line(reference))?;
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn wait(root: &Path, args: WaitArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    for_each(&args.containers, |reference| {
        let record = find(&store, reference)?;
        let code = lifecycle::wait(&store, &record.id)?;
        outln!("{code}")?;
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container (kiln makes none: accepted for
    /// docker's command lines, and does nothing).
    #[arg(short = 'v', long = "volumes")]
    _volumes: bool,
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn rm(root: &Path, args: RmArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    for_each(&args.containers, |reference| {
        let record = find(&store, reference)?;
        lifecycle::remove(&store, &record.id, args.force)?;
        outln!("{}", escape_line(reference))?;
        Ok(())
    })
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The container.
    container: String,
    /// Its new name.
    new_name: String,
}

pub fn rename(root: &Path, args: RenameArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let renamed = find(&store, &args.container)
        .and_then(|record| Ok(lifecycle::rename(&store, &record.id, &args.new_name)?));
    if let Err(err) = renamed {
        errln!("Error response from daemon: {}", message(&err))?;
        errln!(
            "Error: failed to rename container named {}",
            escape_line(&args.container)
        )?;
        return Err(super::report::ExitQuietly.into());
    }
    Ok(())
}

/// `kiln container …`: docker's management command form of the container commands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Remove all stopped containers.
    Prune(PruneArgs),
    /// List containers.
    #[command(alias = "ls", alias = "list")]
    Ps(PsArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Display detailed information on one or more containers.
    Inspect(ContainerInspectArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Restart one or more containers.
    Restart(RestartArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(WaitArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Create a new container (not started).
    Create(super::run::RunArgs),
    /// Run a command in a new container.
    Run(super::run::RunArgs),
}

#[derive(Debug, Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    command: ContainerCommand,
}

impl ContainerArgs {
    /// What the subcommand needs of the rootless namespace: its top-level twin's.
    pub fn rootless_need(&self) -> super::rootless::Need {
        match self.command {
            ContainerCommand::Create(_)
            | ContainerCommand::Run(_)
            | ContainerCommand::Start(_)
            | ContainerCommand::Restart(_) => super::rootless::Need::Owners,
            _ => super::rootless::Need::Quiet,
        }
    }
}

pub fn container(root: &Path, args: ContainerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ContainerCommand::Prune(args) => prune(root, args)?,
        ContainerCommand::Ps(args) => ps(root, args)?,
        ContainerCommand::Rm(args) => rm(root, args)?,
        ContainerCommand::Stop(args) => stop(root, args)?,
        ContainerCommand::Start(args) => return start(root, args),
        ContainerCommand::Logs(args) => logs(root, args)?,
        ContainerCommand::Kill(args) => kill(root, args)?,
        ContainerCommand::Restart(args) => restart(root, args)?,
        ContainerCommand::Wait(args) => wait(root, args)?,
        ContainerCommand::Rename(args) => rename(root, args)?,
        ContainerCommand::Create(args) => return Ok(super::run::create(root, args)),
        ContainerCommand::Run(args) => return Ok(super::run::run(root, args)),
        ContainerCommand::Inspect(args) => {
            inspect_containers(root, &args.containers, args.format.as_deref())?
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// `docker container prune`: removes every stopped container, lists them and the space freed.
pub fn prune(root: &Path, args: PruneArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    if !args.force {
        out!(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to \
             continue? [y/N] "
        )?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            return Ok(());
        }
    }
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for record in lifecycle::containers(&store)? {
        if record.is_running() {
            continue;
        }
        let size = kiln::sys::atomic::tree_size(&store.container_dir(&record.id)?);
        if lifecycle::remove(&store, &record.id, false).is_ok() {
            reclaimed += size;
            deleted.push(record.id);
        }
    }
    if !deleted.is_empty() {
        outln!("Deleted Containers:")?;
        for id in &deleted {
            outln!("{id}")?;
        }
        outln!()?;
    }
    outln!("Total reclaimed space: {}", human_size(reclaimed, 3))?;
    Ok(())
}

/// `kiln inspect`'s `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectType {
    /// Containers only.
    Container,
    /// Images only.
    Image,
}

/// `kiln inspect`: containers first (by id, name or id prefix), else images, as docker does.
#[derive(Debug, Args)]
pub struct InspectCommandArgs {
    /// Only this kind of object.
    #[arg(long = "type", value_enum)]
    kind: Option<InspectType>,
    #[command(flatten)]
    image: super::images::InspectArgs,
}

#[derive(Debug, Args)]
pub struct ContainerInspectArgs {
    /// Format the output using a Go template.
    #[arg(short, long)]
    format: Option<String>,
    /// The containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub fn inspect(root: &Path, args: InspectCommandArgs) -> anyhow::Result<()> {
    if args.kind == Some(InspectType::Image) {
        return super::images::inspect(root, args.image);
    }
    let store = Store::open(root)?;
    let names = args.image.names();
    let containers: Vec<&String> = names
        .iter()
        .filter(|n| lifecycle::find(&store, n).is_ok())
        .collect();
    if args.kind == Some(InspectType::Container) || containers.len() == names.len() {
        let names: Vec<String> = names.to_vec();
        return inspect_containers(root, &names, args.image.format());
    }
    if containers.is_empty() {
        return super::images::inspect(root, args.image);
    }
    anyhow::bail!(
        "inspect either containers or images in one call (use --type container|image): {} \
         are containers",
        containers
            .iter()
            .map(|n| escape_line(n))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn inspect_containers(root: &Path, names: &[String], format: Option<&str>) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let mut documents = Vec::new();
    let mut failed = false;
    for name in names {
        match find(&store, name) {
            Ok(record) => documents.push(inspect_document(&store, &record)?),
            Err(_) => {
                failed = true;
                errln!("Error: No such container: {}", escape_line(name))?;
            }
        }
    }
    match format {
        Some(format) if format != "json" => {
            let text = format.replace("\\t", "\t").replace("\\n", "\n");
            let template = super::template::Template::parse(&text)?;
            for document in &documents {
                let value = serde_json::to_value(document)?;
                outln!(
                    "{}",
                    template.render(&super::template::escape_strings(&value))?
                )?;
            }
        }
        _ => {
            write_docker_json(&documents)?;
        }
    }
    if failed {
        return Err(super::report::ExitQuietly.into());
    }
    Ok(())
}

/// docker's container inspect document, for the fields kiln has, in docker's order.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectDocument {
    id: String,
    created: String,
    path: String,
    args: Vec<String>,
    state: InspectState,
    image: String,
    resolv_conf_path: std::path::PathBuf,
    hostname_path: std::path::PathBuf,
    hosts_path: std::path::PathBuf,
    log_path: std::path::PathBuf,
    name: String,
    restart_count: u32,
    driver: &'static str,
    platform: &'static str,
    host_config: InspectHostConfig,
    mounts: Vec<Value>,
    config: InspectConfig,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    status: &'static str,
    running: bool,
    paused: bool,
    restarting: bool,
    #[serde(rename = "OOMKilled")]
    oom_killed: bool,
    dead: bool,
    pid: u32,
    exit_code: i32,
    error: String,
    started_at: String,
    finished_at: String,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHostConfig {
    binds: Vec<String>,
    log_config: Value,
    network_mode: String,
    restart_policy: Value,
    auto_remove: bool,
    readonly_rootfs: bool,
    init: bool,
    memory: u64,
    nano_cpus: i64,
    pids_limit: Option<u64>,
    isolation: &'static str,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    hostname: String,
    domainname: &'static str,
    user: String,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Vec<String>,
    cmd: Option<Vec<String>>,
    image: String,
    volumes: Option<Value>,
    working_dir: String,
    entrypoint: Option<Vec<String>>,
    on_build: Option<Value>,
    labels: std::collections::HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_timeout: Option<u32>,
}

/// docker's container inspect document of `record`.
fn inspect_document(store: &Store, record: &ContainerRecord) -> anyhow::Result<InspectDocument> {
    let options = lifecycle::read_options(store, record).unwrap_or_default();
    let image = store.resolve(&record.image.to_string()).ok();
    let image_config = image
        .as_ref()
        .and_then(|i| i.config.config().clone())
        .unwrap_or_default();
    let entrypoint: Option<Vec<String>> = match &options.entrypoint {
        Some(e) if e.is_empty() => None,
        Some(e) => Some(vec![e.clone()]),
        None => image_config.entrypoint().clone(),
    };
    let cmd: Option<Vec<String>> = if !options.args.is_empty() {
        Some(options.args.clone())
    } else if options.entrypoint.is_some() {
        None
    } else {
        image_config.cmd().clone()
    };
    let status = record.status();
    let dir = store.container_dir(&record.id)?;
    let binds = options
        .volumes
        .iter()
        .filter_map(|m| match &m.source {
            kiln::runtime::MountSource::Bind(host) => Some(format!(
                "{}:{}{}",
                host.display(),
                m.destination,
                if m.readonly { ":ro" } else { "" }
            )),
            _ => None,
        })
        .collect();
    let mounts = options
        .volumes
        .iter()
        .filter_map(|m| match &m.source {
            kiln::runtime::MountSource::Bind(host) => Some(json!({
                "Type": "bind",
                "Source": host,
                "Destination": m.destination,
                "Mode": if m.readonly { "ro" } else { "" },
                "RW": !m.readonly,
                "Propagation": "rprivate",
            })),
            _ => None,
        })
        .collect();
    #[allow(clippy::cast_possible_truncation)] // whole nanoseconds of a CPU count
    let nano_cpus = options.limits.cpus.map_or(0, |c| (c * 1e9) as i64);
    let document = InspectDocument {
        id: record.id.clone(),
        created: record.created.clone(),
        path: record.config.args.first().cloned().unwrap_or_default(),
        args: record.config.args.iter().skip(1).cloned().collect(),
        state: InspectState {
            status: status.as_str(),
            running: matches!(status, ContainerState::Running | ContainerState::Restarting),
            paused: false,
            restarting: status == ContainerState::Restarting,
            oom_killed: record.run.oom_killed,
            dead: false,
            pid: match status {
                ContainerState::Running => record.pid.unwrap_or(0),
                _ => 0,
            },
            exit_code: record.run.exit_code.unwrap_or(0),
            error: record.run.error.clone(),
            started_at: record
                .run
                .started_at
                .clone()
                .unwrap_or_else(|| ZERO_TIME.to_string()),
            finished_at: record
                .run
                .finished_at
                .clone()
                .unwrap_or_else(|| ZERO_TIME.to_string()),
        },
        image: record.image.to_string(),
        resolv_conf_path: dir.join("resolv.conf"),
        hostname_path: dir.join("hostname"),
        hosts_path: dir.join("hosts"),
        log_path: lifecycle::log_path(store, &record.id)?,
        name: format!("/{}", record.name),
        restart_count: record.run.restart_count,
        driver: "overlay",
        platform: "linux",
        host_config: InspectHostConfig {
            binds,
            log_config: json!({"Type": "json-file", "Config": {}}),
            network_mode: network_name(&options),
            restart_policy: json!({
                "Name": options.restart.name(),
                "MaximumRetryCount": options.restart.maximum_retry_count(),
            }),
            auto_remove: options.remove,
            readonly_rootfs: options.read_only,
            init: options.init,
            memory: options.limits.memory.unwrap_or(0),
            nano_cpus,
            pids_limit: options.limits.pids,
            isolation: options.isolation.name(),
        },
        mounts,
        config: InspectConfig {
            hostname: record.config.hostname.clone(),
            domainname: "",
            user: record.config.user.clone(),
            attach_stdin: false,
            attach_stdout: false,
            attach_stderr: false,
            tty: record.config.tty,
            open_stdin: false,
            stdin_once: false,
            env: record.config.env.clone(),
            cmd,
            image: record.image_name.clone(),
            volumes: None,
            working_dir: record.config.working_dir.clone(),
            entrypoint,
            on_build: None,
            labels: image_config.labels().clone().unwrap_or_default(),
            stop_signal: options
                .stop_signal
                .clone()
                .or_else(|| image_config.stop_signal().clone()),
            stop_timeout: options.stop_timeout,
        },
    };
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_words_as_docker_ps() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&words(&["httpd", "-f", "-p", "8080"])),
            "httpd -f -p 8080"
        );
        assert_eq!(
            command_line(&words(&["sh", "-c", "echo hello; sleep 1"])),
            "sh -c 'echo hello; sleep 1'"
        );
    }

    #[test]
    fn time_bounds_read_as_docker_logs() {
        assert_eq!(parse_time_bound("10m", 1000).ok(), Some(400));
        assert_eq!(parse_time_bound("1h30m", 10_000).ok(), Some(10_000 - 5400));
        assert_eq!(parse_time_bound("1700000000", 0).ok(), Some(1_700_000_000));
        assert_eq!(
            parse_time_bound("2024-01-01T00:00:00Z", 0).ok(),
            Some(1_704_067_200)
        );
        assert!(parse_time_bound("ten", 0).is_err());
    }
}
