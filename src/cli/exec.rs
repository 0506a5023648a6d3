//! `kiln exec` (a process in a running container, docker's flags and exit codes: the command's,
//! 126 when it cannot be executed or kiln fails to start it, 127 when it is not found, 1 when the
//! container does not run) and `kiln top` (its processes, as `docker top` shows them).

use super::term::out;
use anyhow::Context as _;
use clap::Args;
use kiln::container::exec::{self, ExecError, ExecOptions, ProcessRow};
use kiln::container::{env_entry, env_file};
use kiln::runtime::Stdio;
use kiln::store::Store;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background (nothing is printed).
    #[arg(short, long)]
    detach: bool,
    /// Keep standard input open and pass it to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal (from the container's /dev/pts).
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (`K=V`, or `K` to take its value from kiln's environment).
    #[arg(short, long = "env", value_name = "K[=V]")]
    env: Vec<String>,
    /// Read environment variables from a file (one `K=V` or `K` per line, `#` comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<PathBuf>,
    /// The user: `name|uid[:group|gid]`, resolved from the container's /etc/passwd and
    /// /etc/group.
    #[arg(short, long)]
    user: Option<String>,
    /// The working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// The container (name, id or unique id prefix).
    container: String,
    /// The command and its arguments.
    #[arg(allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct TopArgs {
    /// The container (name, id or unique id prefix).
    container: String,
    /// `ps` options (default: `-ef`, read from /proc without running ps).
    #[arg(allow_hyphen_values = true)]
    ps_options: Vec<String>,
}

/// Runs `kiln exec` and returns the process's exit code.
pub fn exec(root: &Path, args: ExecArgs) -> ExitCode {
    match exec_process(root, args) {
        Ok(code) => exit_code(code),
        Err(err) => {
            let code = err
                .downcast_ref::<ExecError>()
                .map_or(126, ExecError::exit_code);
            super::report::print(&err);
            exit_code(code)
        }
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(126))
}

fn exec_process(root: &Path, args: ExecArgs) -> anyhow::Result<i32> {
    let store = Store::open(root)?;
    let lookup = |name: &str| std::env::var(name).ok();
    let mut env = Vec::new();
    for path in &args.env_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read env file {}", path.display()))?;
        env.extend(env_file(&text, lookup)?);
    }
    for value in &args.env {
        env.extend(env_entry(value, lookup)?);
    }
    let options = ExecOptions {
        args: args.command.clone(),
        env,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        tty: args.tty,
        detach: args.detach,
    };
    let streams = super::attach::Streams::of_kiln()?;
    let stdio = if args.detach {
        // docker exec -d: the process's streams go nowhere, and it outlives kiln.
        let null = || -> anyhow::Result<OwnedFd> {
            Ok(std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .context("opening /dev/null")?
                .into())
        };
        if args.tty {
            // docker's shim keeps a detached process's terminal open; kiln exits, and the
            // terminal would hang up under the process (SIGHUP) as the master closed.
            anyhow::bail!(
                "kiln exec -d -t: nothing would hold the terminal of a detached process once \
                 kiln exits (docker's shim does); use -d without -t"
            );
        }
        Stdio::Streams {
            stdin: None,
            stdout: null()?,
            stderr: null()?,
        }
    } else {
        streams.stdio(args.tty, args.interactive)?
    };
    let proxied = super::attach::block_proxied()?;
    let mut process = exec::exec(&store, &args.container, &options, stdio)?;
    if args.detach {
        process.detach();
        return Ok(0);
    }
    super::attach::forward_signals(proxied, process.handle(), None);
    if let Some(master) = process.take_terminal() {
        streams.relay(&master, args.interactive)?;
    }
    Ok(process.wait()?.exit_code())
}

/// `kiln top`: docker's table (columns at least 20 wide, 3 spaces of padding).
pub fn top(root: &Path, args: TopArgs) -> anyhow::Result<()> {
    let store = Store::open(root)?;
    let rows = exec::processes(&store, &args.container)?;
    let table = if args.ps_options.is_empty() {
        default_table(&rows)?
    } else {
        ps_table(&rows, &args.ps_options)?
    };
    // Cells come from the container (command lines, user names): a newline or tab in one must
    // not break the table.
    let table: Vec<Vec<String>> = table
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| kiln::error::escape_line(cell))
                .collect()
        })
        .collect();
    out!("{}", format_table(&table))?;
    Ok(())
}

/// docker top's text: tabwriter with a minimum width of 20 and padding 3; the last column is
/// not padded.
fn format_table(table: &[Vec<String>]) -> String {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let longest = table
                .iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0);
            (longest + 3).max(20)
        })
        .collect();
    let mut text = String::new();
    for row in table {
        for (c, cell) in row.iter().enumerate() {
            text.push_str(cell);
            if c + 1 < row.len() {
                let width = widths.get(c).copied().unwrap_or(20);
                text.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
            }
        }
        text.push('\n');
    }
    text
}

/// The host's clock ticks per second, seconds since boot and boot time (epoch seconds).
struct Clock {
    ticks: u64,
    uptime: f64,
    boot: u64,
}

impl Clock {
    fn read() -> anyhow::Result<Clock> {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(100);
        let uptime = std::fs::read_to_string("/proc/uptime")
            .context("reading /proc/uptime")?
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
        let boot = std::fs::read_to_string("/proc/stat")
            .context("reading /proc/stat")?
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Clock {
            ticks,
            uptime,
            boot,
        })
    }
}

/// `ps -ef`'s columns for `rows`, read from /proc.
fn default_table(rows: &[ProcessRow]) -> anyhow::Result<Vec<Vec<String>>> {
    let clock = Clock::read()?;
    let now = u64::try_from(kiln::oci::timestamp::now_seconds()).unwrap_or(0);
    let mut table = vec![
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .map(String::from)
            .to_vec(),
    ];
    for row in rows {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(row.uid))
            .ok()
            .flatten()
            .map_or_else(|| row.uid.to_string(), |user| user.name);
        let started_after_boot = row.start_ticks / clock.ticks;
        let elapsed = (clock.uptime - row.start_ticks as f64 / clock.ticks as f64).max(0.0);
        let cpu_seconds = row.cpu_ticks as f64 / clock.ticks as f64;
        let percent = if elapsed > 0.0 {
            (cpu_seconds * 100.0 / elapsed) as u64
        } else {
            0
        };
        table.push(vec![
            user,
            row.pid.to_string(),
            row.ppid.to_string(),
            percent.to_string(),
            start_time(clock.boot + started_after_boot, now),
            tty_name(row.tty),
            cpu_time(row.cpu_ticks / clock.ticks),
            row.cmd.clone(),
        ]);
    }
    Ok(table)
}

/// `ps`'s STIME (UTC): `HH:MM` within a day, `MonDD` within a year, else the year.
fn start_time(started: u64, now: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let age = now.saturating_sub(started);
    let (year, month, day) = civil_date(started / 86_400);
    if age < 86_400 {
        let of_day = started % 86_400;
        format!("{:02}:{:02}", of_day / 3600, of_day % 3600 / 60)
    } else if age < 365 * 86_400 {
        let name = MONTHS
            .get(month.saturating_sub(1) as usize)
            .unwrap_or(&"???");
        format!("{name}{day:02}")
    } else {
        year.to_string()
    }
}

/// Year, month (1-12) and day of the month of a day number since 1970-01-01 (Howard Hinnant's
/// civil_from_days).
fn civil_date(days: u64) -> (i64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `ps`'s TIME: `[DD-]HH:MM:SS` of CPU time.
fn cpu_time(seconds: u64) -> String {
    let days = seconds / 86_400;
    let clock = format!(
        "{:02}:{:02}:{:02}",
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60
    );
    if days > 0 {
        format!("{days}-{clock}")
    } else {
        clock
    }
}

/// `ps`'s TTY of a `tty_nr` (proc(5)): `pts/N`, `ttyN`, `ttySN`, or `?`.
fn tty_name(tty_nr: u64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xf_ff00);
    match major {
        0 => "?".to_string(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => "?".to_string(),
    }
}

/// docker's way for other options: the host's `ps` with them, keeping the header and the rows
/// whose PID column is one of the container's processes.
fn ps_table(rows: &[ProcessRow], options: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    let output = std::process::Command::new("ps")
        .args(options)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ps")?;
    if !output.status.success() {
        anyhow::bail!(
            "ps {}: {}{}",
            options.join(" "),
            String::from_utf8_lossy(&output.stderr).trim(),
            output.status
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let Some(pid_column) = header.iter().position(|h| h == "PID") else {
        anyhow::bail!("couldn't find PID field in ps output");
    };
    let pids: std::collections::BTreeSet<String> =
        rows.iter().map(|row| row.pid.to_string()).collect();
    let mut table = vec![header.clone()];
    for line in lines {
        // The last column (a command) may hold spaces: split into as many fields as the header.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let last = header.len().saturating_sub(1).min(fields.len());
        let (head, rest) = fields.split_at(last);
        let mut row: Vec<String> = head.iter().map(|f| f.to_string()).collect();
        row.push(rest.join(" "));
        if row.get(pid_column).is_some_and(|pid| pids.contains(pid)) {
            table.push(row);
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_table_looks_like_dockers() {
        let table = vec![
            vec!["UID".to_string(), "PID".into(), "CMD".into()],
            vec![
                "root".to_string(),
                "14536".into(),
                "busybox sleep 300".into(),
            ],
        ];
        assert_eq!(
            format_table(&table),
            "UID                 PID                 CMD\n\
             root                14536               busybox sleep 300\n"
        );
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name(1025), "tty1");
        assert_eq!(cpu_time(3723), "01:02:03");
        assert_eq!(cpu_time(90_061), "1-01:01:01");
        // 2026-12-07 17:07 UTC.
        let started = 1_796_663_220;
        assert_eq!(start_time(started, started + 60), "17:07");
        assert_eq!(start_time(started, started + 3 * 86_400), "Dec07");
        assert_eq!(start_time(started, started + 400 * 86_400), "2026");
    }
}
