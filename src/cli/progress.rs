//! Rendering [`BuildEvent`]s on stderr, in BuildKit's three looks (`--progress=auto|tty|plain`,
//! plus `json`):
//!
//! - plain: BuildKit's `--progress=plain` (its `progressui/printer.go`): a `#N NAME` header when
//!   a step becomes the one being printed, `#N 0.123 line` for its output (seconds since the
//!   step started), `#N DONE 1.2s`, `#N CACHED`, `#N ERROR: ...`, `#N CANCELED`; when output of
//!   another step comes in between, `#N ...` closes the interrupted one. Steps are numbered from
//!   1, as BuildKit's vertices.
//! - tty: a live area (indicatif) with a `[+] Building 3.2s (5/9)` header, one spinner line per
//!   running step with its timer and the last lines of its output dimmed under it; a step that
//!   ends becomes a static `=> [2/3] RUN make   1.2s` line above the area.
//! - json: one JSON object per line, the event with a `time` field (seconds since the build
//!   started).
//!
//! Quiet (`-q`) shows nothing unless a step fails; then that step's last output lines and the
//! error, in the plain look.

use console::{measure_text_width, truncate_str};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln::builder::{BuildEvent, Progress, StepInfo};
use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many output lines of a running step the tty look shows under it.
const TAIL_LINES: usize = 6;
/// How many output lines of a step are kept to show under its error if it fails.
const ERROR_TAIL: usize = 20;
/// How often the tty look redraws at most, and how often its timers tick.
const TTY_HZ: u8 = 10;
const TICK: Duration = Duration::from_millis(100);
/// The width the tty look assumes when the terminal does not say.
const FALLBACK_WIDTH: u16 = 80;
/// The tty look's lines: the header, a running step or phase, a line of a step's output.
const HEADER: &str = "[+] Building {secs} {msg}";
const RUNNING: &str = " {spinner} {wide_msg} {secs}";
const TAIL: &str = " => => # {wide_msg:.dim}";

/// `--progress`: how a build shows its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` when stderr is a terminal and `CI` is not set (empty, `false` or `0` count as not
    /// set), else `plain`.
    Auto,
    /// A live display that redraws in place.
    Tty,
    /// One line per event, for logs.
    Plain,
    /// One JSON object per event and line, for programs.
    Json,
}

impl ProgressMode {
    /// `Auto` made concrete, given whether stderr is a terminal and the value of `CI`.
    pub fn resolve(self, stderr_is_terminal: bool, ci: Option<&str>) -> ProgressMode {
        let in_ci = ci.is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        match self {
            ProgressMode::Auto if stderr_is_terminal && !in_ci => ProgressMode::Tty,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        }
    }
}

/// Seconds since the build started; injected so tests print fixed times.
type Clock = Box<dyn Fn() -> Duration + Send + Sync>;

fn real_clock() -> Clock {
    let start = Instant::now();
    Box::new(move || start.elapsed())
}

/// The renderer for `mode` (`Auto` looks at stderr and `CI`), writing to `out` (stderr in the
/// CLI). With `quiet`, only a failing step's output and error are shown, whatever the mode.
///
/// The build calls [`Progress::event`] (from any thread, one event at a time); call
/// [`Renderer::finish`] when the build returns, so the tty look draws its last state and stops
/// its timers (dropping the renderer does it too).
pub fn renderer(mode: ProgressMode, quiet: bool, out: Box<dyn Write + Send>) -> Renderer {
    let ci = std::env::var("CI").ok();
    let mode = mode.resolve(super::term::stderr_is_terminal(), ci.as_deref());
    with_clock(mode, quiet, out, real_clock())
}

/// [`renderer`] for a concrete mode and clock.
fn with_clock(
    mode: ProgressMode,
    quiet: bool,
    out: Box<dyn Write + Send>,
    clock: Clock,
) -> Renderer {
    let kind = match mode {
        // The plain looks write only text: all of it escaped on its way out (a step's name
        // quotes the Dockerfile, its output lines come from the image's programs).
        _ if quiet => Kind::Quiet(Mutex::new(Quiet::new(escaping(out), clock))),
        ProgressMode::Tty => {
            let term = WriterTerm {
                out: Mutex::new(out),
            };
            let target = ProgressDrawTarget::term_like_with_hz(Box::new(term), TTY_HZ);
            Kind::Tty(Tty::new(target, Some(TICK), Box::new(stderr_width)))
        }
        ProgressMode::Json => Kind::Json(Mutex::new(Json { out, clock })),
        ProgressMode::Auto | ProgressMode::Plain => {
            Kind::Plain(Mutex::new(Plain::new(escaping(out), clock)))
        }
    };
    Renderer { kind }
}

/// `out` escaping the text written to it ([`super::term::Escaping`]).
fn escaping(out: Box<dyn Write + Send>) -> Box<dyn Write + Send> {
    Box::new(super::term::Escaping::new(out))
}

/// Shows build events in one of the looks; see [`renderer`].
pub struct Renderer {
    kind: Kind,
}

enum Kind {
    Quiet(Mutex<Quiet>),
    Plain(Mutex<Plain>),
    Json(Mutex<Json>),
    Tty(Tty),
}

impl Progress for Renderer {
    fn event(&self, event: BuildEvent) {
        // A broken stderr must not fail the build: output errors are dropped here.
        let _ = match &self.kind {
            Kind::Quiet(q) => lock(q).event(event),
            Kind::Plain(p) => lock(p).event(event),
            Kind::Json(j) => lock(j).event(&event),
            Kind::Tty(t) => t.event(event),
        };
    }
}

impl Renderer {
    /// Ends the display: the tty look stops its timers, clears what is still running and
    /// leaves the header as a last `FINISHED` line; plain closes an open phase. Idempotent.
    pub fn finish(&self) {
        let _ = match &self.kind {
            Kind::Quiet(q) => lock(q).out.flush(),
            Kind::Plain(p) => lock(p).finish(),
            Kind::Json(j) => lock(j).out.flush(),
            Kind::Tty(t) => t.finish(),
        };
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A poisoned lock only means another event panicked mid-print; the state is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Step names by id; an event for a step the plan did not list gets a placeholder name.
#[derive(Default)]
struct Names(Vec<StepInfo>);

impl Names {
    fn get(&self, step: usize) -> String {
        match self.0.iter().find(|s| s.id == step) {
            Some(s) => s.name.clone(),
            None => format!("step {step}"),
        }
    }
}

/// BuildKit's plain look.
struct Plain {
    out: Box<dyn Write + Send>,
    clock: Clock,
    names: Names,
    /// When each running step started, by step id.
    started: BTreeMap<usize, Duration>,
    /// The vertex whose header was printed last and that has not ended.
    current: Option<usize>,
    /// A header was printed (the next one is preceded by a blank line).
    printed: bool,
    /// The open phase (exporting, naming): its vertex number, name and start.
    phase: Option<(usize, String, Duration)>,
    /// Vertex numbers given so far: the plan's steps get a block of them, each phase one.
    vertices: usize,
    /// The vertex number of step 0.
    first_step: usize,
    /// The build checks' findings, listed when the build ends.
    lint: Vec<String>,
}

impl Plain {
    fn new(out: Box<dyn Write + Send>, clock: Clock) -> Self {
        Plain {
            out,
            clock,
            names: Names::default(),
            started: BTreeMap::new(),
            current: None,
            printed: false,
            phase: None,
            vertices: 0,
            first_step: 1,
            lint: Vec::new(),
        }
    }

    /// The `#N` of a step: BuildKit numbers vertices from 1.
    fn vertex(&self, step: usize) -> usize {
        self.first_step + step
    }

    /// Makes vertex `n` the one being printed: closes the interrupted one with `#N ...` and
    /// prints `n`'s header.
    fn switch_to(&mut self, n: usize, name: &str) -> std::io::Result<()> {
        if self.current == Some(n) {
            return Ok(());
        }
        let mut text = String::new();
        if let Some(old) = self.current {
            let _ = writeln!(text, "#{old} ...");
        }
        if self.printed {
            text.push('\n');
        }
        self.printed = true;
        self.current = Some(n);
        self.out.write_all(text.as_bytes())?;
        write_prefixed(&mut self.out, &format!("#{n} "), name)
    }

    /// Prints a step's header if needed, then `what` under it; `end` marks the step ended.
    fn step_line(&mut self, step: usize, what: &str, end: bool) -> std::io::Result<()> {
        let n = self.vertex(step);
        let name = self.names.get(step);
        self.switch_to(n, &name)?;
        write_prefixed(&mut self.out, &format!("#{n} "), what)?;
        if end {
            self.current = None;
            self.started.remove(&step);
        }
        self.out.flush()
    }

    fn close_phase(&mut self) -> std::io::Result<()> {
        if let Some((n, name, start)) = self.phase.take() {
            let secs = (self.clock)().saturating_sub(start).as_secs_f64();
            self.switch_to(n, &name)?;
            self.out
                .write_all(format!("#{n} DONE {secs:.1}s\n").as_bytes())?;
            self.current = None;
        }
        Ok(())
    }

    fn open_phase(&mut self, what: String) -> std::io::Result<()> {
        self.close_phase()?;
        self.vertices += 1;
        let n = self.vertices;
        self.switch_to(n, &what)?;
        self.phase = Some((n, what, (self.clock)()));
        Ok(())
    }

    fn event(&mut self, event: BuildEvent) -> std::io::Result<()> {
        match event {
            BuildEvent::Planned { steps } => {
                // Phases before the plan took the first numbers.
                self.first_step = self.vertices + 1;
                self.vertices += steps.len();
                self.names = Names(steps);
                Ok(())
            }
            BuildEvent::Started { step } => {
                let now = (self.clock)();
                self.started.insert(step, now);
                let name = self.names.get(step);
                self.switch_to(self.vertex(step), &name)?;
                self.out.flush()
            }
            BuildEvent::Cached { step } => self.step_line(step, "CACHED", true),
            BuildEvent::Log { step, line, .. } => {
                let since = self.started.get(&step).copied().unwrap_or_default();
                let at = (self.clock)().saturating_sub(since);
                self.step_line(step, &timed(at, &line), false)
            }
            BuildEvent::Done { step, elapsed } => {
                let secs = elapsed.as_secs_f64();
                self.step_line(step, &format!("DONE {secs:.1}s"), true)
            }
            BuildEvent::Error { step, message } => {
                self.step_line(step, &format!("ERROR: {message}"), true)
            }
            BuildEvent::Canceled { step } => self.step_line(step, "CANCELED", true),
            BuildEvent::Phase { what } => {
                self.open_phase(what)?;
                self.out.flush()
            }
            BuildEvent::ImagePulled {
                digest, downloaded, ..
            } => {
                self.phase_line(&format!("{digest}: {downloaded} blobs downloaded"))?;
                self.close_phase()?;
                self.out.flush()
            }
            BuildEvent::CacheImported {
                source,
                records,
                warning,
            } => {
                self.open_phase(format!("importing cache manifest from {source}"))?;
                let line = match warning {
                    Some(warning) => format!("WARNING: {warning}"),
                    None => format!("{records} cache records"),
                };
                self.phase_line(&line)?;
                self.close_phase()?;
                self.out.flush()
            }
            BuildEvent::Lint {
                rule,
                message,
                line,
                ..
            } => {
                self.lint.push(lint_short(&rule, &message, line));
                Ok(())
            }
            BuildEvent::Warning {
                step: Some(step),
                message,
            } => self.step_line(step, &format!("WARNING: {message}"), false),
            BuildEvent::Warning {
                step: None,
                message,
            } => {
                self.close_phase()?;
                if let Some(old) = self.current.take() {
                    writeln!(self.out, "#{old} ...")?;
                }
                // No `#N` prefix to attribute its lines: one line, whatever the message holds.
                let message = kiln::error::escape_line(&message);
                write_prefixed(&mut self.out, "", &format!("WARNING: {message}"))?;
                self.out.flush()
            }
            BuildEvent::CacheExported {
                destination,
                records,
                blobs,
            } => {
                self.open_phase(format!("exporting cache to {destination}"))?;
                self.phase_line(&format!("{records} cache records, {blobs} layers copied"))?;
                self.close_phase()?;
                self.out.flush()
            }
            BuildEvent::Finished { image_id, names } => {
                if self.phase.is_none() {
                    self.open_phase("exporting to image".into())?;
                }
                if let Some((n, ..)) = &self.phase {
                    let n = *n;
                    let prefix = format!("#{n} ");
                    write_prefixed(
                        &mut self.out,
                        &prefix,
                        &format!("writing image {image_id} done"),
                    )?;
                    for name in &names {
                        write_prefixed(&mut self.out, &prefix, &format!("naming to {name} done"))?;
                    }
                }
                self.close_phase()?;
                self.out.flush()
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.close_phase()?;
        let lint = std::mem::take(&mut self.lint);
        if !lint.is_empty() {
            self.out.write_all(lint_summary(&lint).as_bytes())?;
        }
        self.out.flush()
    }

    /// A line under the open phase.
    fn phase_line(&mut self, line: &str) -> std::io::Result<()> {
        if let Some((n, ..)) = &self.phase {
            let prefix = format!("#{n} ");
            write_prefixed(&mut self.out, &prefix, line)?;
        }
        Ok(())
    }
}

/// A check finding as a build lists it (BuildKit's `LintFormatShort`).
fn lint_short(rule: &str, message: &str, line: usize) -> String {
    format!("{rule}: {message} (line {line})")
}

/// The build checks' findings after a build, as buildx's `printWarnings` lists them (kiln's
/// `--check` shows each one in full, where buildx points at `docker --debug`).
fn lint_summary(findings: &[String]) -> String {
    let count = match findings.len() {
        1 => "1 warning found".to_string(),
        n => format!("{n} warnings found"),
    };
    let mut out = format!("\n {count} (use kiln build --check to expand):\n");
    for finding in findings {
        let _ = writeln!(out, " - {}", kiln::error::escape_controls(finding));
    }
    out
}

/// A log line after the time since its step started, as BuildKit writes it: three decimals
/// under 10s, two under 100s, then one.
fn timed(at: Duration, line: &str) -> String {
    let secs = at.as_secs_f64();
    let decimals = match secs {
        s if s < 10.0 => 3,
        s if s < 100.0 => 2,
        _ => 1,
    };
    format!("{secs:.decimals$} {line}")
}

/// Writes `text` as whole lines, each after `prefix`, so a multi-line message stays attributed
/// to its step and nothing is left as a partial line.
fn write_prefixed(out: &mut dyn Write, prefix: &str, text: &str) -> std::io::Result<()> {
    let mut buf = String::new();
    for line in text.split('\n') {
        let _ = writeln!(buf, "{prefix}{line}");
    }
    out.write_all(buf.as_bytes())
}

/// The json look: each event as serde serializes it, plus `time`.
struct Json {
    out: Box<dyn Write + Send>,
    clock: Clock,
}

impl Json {
    fn event(&mut self, event: &BuildEvent) -> std::io::Result<()> {
        // serde leaves DEL and C1 characters raw: written as JSON escapes.
        let mut line = super::term::json_safe(&serde_json::to_string(event)?);
        let time = serde_json::to_string(&(self.clock)().as_secs_f64())?;
        // Every event serializes as an object: add `time` as its last field.
        if line.pop() == Some('}') {
            line.push_str(&format!(",\"time\":{time}}}\n"));
            self.out.write_all(line.as_bytes())?;
        }
        self.out.flush()
    }
}

/// Quiet mode: the last lines of each running step are kept and shown only if it fails.
struct Quiet {
    out: Box<dyn Write + Send>,
    clock: Clock,
    names: Names,
    started: BTreeMap<usize, Duration>,
    tails: BTreeMap<usize, VecDeque<String>>,
}

impl Quiet {
    fn new(out: Box<dyn Write + Send>, clock: Clock) -> Self {
        Quiet {
            out,
            clock,
            names: Names::default(),
            started: BTreeMap::new(),
            tails: BTreeMap::new(),
        }
    }

    fn event(&mut self, event: BuildEvent) -> std::io::Result<()> {
        match event {
            BuildEvent::Planned { steps } => self.names = Names(steps),
            BuildEvent::Started { step } => {
                let now = (self.clock)();
                self.started.insert(step, now);
            }
            BuildEvent::Log { step, line, .. } => {
                let since = self.started.get(&step).copied().unwrap_or_default();
                let at = (self.clock)().saturating_sub(since);
                let tail = self.tails.entry(step).or_default();
                if tail.len() == ERROR_TAIL {
                    tail.pop_front();
                }
                tail.push_back(timed(at, &line));
            }
            BuildEvent::Done { step, .. } | BuildEvent::Canceled { step } => {
                self.started.remove(&step);
                self.tails.remove(&step);
            }
            BuildEvent::Error { step, message } => {
                let n = step + 1;
                let prefix = format!("#{n} ");
                write_prefixed(&mut self.out, &prefix, &self.names.get(step))?;
                for line in self.tails.remove(&step).unwrap_or_default() {
                    write_prefixed(&mut self.out, &prefix, &line)?;
                }
                write_prefixed(&mut self.out, &prefix, &format!("ERROR: {message}"))?;
                self.out.flush()?;
            }
            BuildEvent::CacheImported {
                source,
                warning: Some(warning),
                ..
            } => {
                let line = format!("WARNING: cache from {source}: {warning}");
                write_prefixed(&mut self.out, "", &kiln::error::escape_line(&line))?;
                self.out.flush()?;
            }
            BuildEvent::Warning { message, .. } => {
                let message = kiln::error::escape_line(&message);
                write_prefixed(&mut self.out, "", &format!("WARNING: {message}"))?;
                self.out.flush()?;
            }
            // As buildx: a quiet build lists no check findings.
            BuildEvent::Lint { .. }
            | BuildEvent::Cached { .. }
            | BuildEvent::Phase { .. }
            | BuildEvent::ImagePulled { .. }
            | BuildEvent::CacheImported { .. }
            | BuildEvent::CacheExported { .. }
            | BuildEvent::Finished { .. } => {}
        }
        Ok(())
    }
}

/// The terminal width of stderr, or a default when it is not a terminal.
fn stderr_width() -> u16 {
    console::Term::stderr()
        .size_checked()
        .map_or(FALLBACK_WIDTH, |(_, cols)| cols)
}

/// The tty look, drawn by indicatif.
struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    /// Timers tick (and the display redraws) this often; `None` redraws only on events.
    tick: Option<Duration>,
    width: Box<dyn Fn() -> u16 + Send + Sync>,
    state: Mutex<TtyState>,
}

#[derive(Default)]
struct TtyState {
    names: Names,
    running: BTreeMap<usize, Running>,
    /// Steps that ended (done, cached, failed, canceled).
    ended: usize,
    /// The running phase (exporting, naming): its line and name.
    phase: Option<(ProgressBar, String)>,
    finished: bool,
    /// The build checks' findings, listed when the build ends.
    lint: Vec<String>,
}

/// A running step's spinner line, its last output lines (with the time since it started; the
/// last [`TAIL_LINES`] are shown, more are kept for an error) and the bars that show them.
struct Running {
    bar: ProgressBar,
    tail: VecDeque<(Duration, String)>,
    tail_bars: Vec<ProgressBar>,
}

/// How a step ended, as the tty look shows it before the name.
#[derive(Clone, Copy)]
enum Ending {
    Done,
    Cached,
    Error,
    Canceled,
}

impl Tty {
    fn new(
        target: ProgressDrawTarget,
        tick: Option<Duration>,
        width: Box<dyn Fn() -> u16 + Send + Sync>,
    ) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let header = multi.add(ProgressBar::new_spinner().with_style(style(HEADER)));
        header.set_message("(0/0)");
        if let Some(every) = tick {
            header.enable_steady_tick(every);
        }
        Tty {
            multi,
            header,
            tick,
            width,
            state: Mutex::new(TtyState::default()),
        }
    }

    fn event(&self, event: BuildEvent) -> std::io::Result<()> {
        let mut st = lock(&self.state);
        if st.finished {
            return Ok(());
        }
        match event {
            BuildEvent::Planned { steps } => {
                st.names = Names(steps);
                self.count(&st);
            }
            BuildEvent::Started { step } => {
                let bar = self
                    .multi
                    .add(ProgressBar::new_spinner().with_style(style(RUNNING)));
                bar.set_message(sanitize(&st.names.get(step)));
                if let Some(every) = self.tick {
                    bar.enable_steady_tick(every);
                }
                let old = st.running.insert(
                    step,
                    Running {
                        bar,
                        tail: VecDeque::new(),
                        tail_bars: Vec::new(),
                    },
                );
                if let Some(old) = old {
                    self.clear(old);
                }
            }
            BuildEvent::Log { step, line, .. } => {
                if let Some(run) = st.running.get_mut(&step) {
                    self.log(run, sanitize(&line));
                }
            }
            BuildEvent::Done { step, elapsed } => {
                self.end(&mut st, step, Ending::Done, Some(elapsed))?
            }
            BuildEvent::Cached { step } => self.end(&mut st, step, Ending::Cached, None)?,
            BuildEvent::Canceled { step } => self.end(&mut st, step, Ending::Canceled, None)?,
            BuildEvent::Error { step, .. } => {
                // BuildKit's printErrorLogs: the step's last output under its name (the CLI
                // prints the message itself).
                let tail = st
                    .running
                    .get(&step)
                    .map(|r| {
                        r.tail
                            .iter()
                            .map(|(at, l)| timed(*at, l))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let name = st.names.get(step);
                self.end(&mut st, step, Ending::Error, None)?;
                let mut block = format!("------\n > {}:\n", sanitize(&name));
                for line in tail {
                    let _ = writeln!(block, "{line}");
                }
                block.push_str("------");
                self.multi.println(block)?;
            }
            BuildEvent::Phase { what } => {
                self.end_phase(&mut st)?;
                let bar = self
                    .multi
                    .add(ProgressBar::new_spinner().with_style(style(RUNNING)));
                bar.set_message(sanitize(&what));
                if let Some(every) = self.tick {
                    bar.enable_steady_tick(every);
                }
                st.phase = Some((bar, what));
            }
            BuildEvent::ImagePulled {
                digest, downloaded, ..
            } => {
                self.end_phase(&mut st)?;
                let line = format!(" => => {digest}: {downloaded} blobs downloaded");
                self.multi.println(self.fit(&sanitize(&line), ""))?;
            }
            BuildEvent::CacheImported {
                source,
                records,
                warning,
            } => {
                let line = match warning {
                    Some(warning) => format!("WARNING: cache from {source}: {warning}"),
                    None => {
                        format!(" => importing cache manifest from {source}: {records} records")
                    }
                };
                self.multi.println(self.fit(&sanitize(&line), ""))?;
            }
            BuildEvent::Warning { message, .. } => {
                let line = format!("WARNING: {message}");
                self.multi.println(self.fit(&sanitize(&line), ""))?;
            }
            BuildEvent::Lint {
                rule,
                message,
                line,
                ..
            } => st.lint.push(lint_short(&rule, &message, line)),
            BuildEvent::CacheExported {
                destination,
                records,
                blobs,
            } => {
                self.end_phase(&mut st)?;
                let line = format!(
                    " => exporting cache to {destination}: {records} records, {blobs} layers copied"
                );
                self.multi.println(self.fit(&sanitize(&line), ""))?;
            }
            BuildEvent::Finished { image_id, names } => {
                if st.phase.is_none() {
                    self.multi
                        .println(self.fit(" => exporting to image", "0.0s"))?;
                }
                self.end_phase(&mut st)?;
                self.multi
                    .println(self.fit(&format!(" => => writing image {image_id}"), ""))?;
                for name in names {
                    let line = format!(" => => naming to {name}");
                    self.multi.println(self.fit(&sanitize(&line), ""))?;
                }
            }
        }
        Ok(())
    }

    /// Adds `line` to a running step's tail and shows the tail under it, oldest first.
    fn log(&self, run: &mut Running, line: String) {
        if run.tail.len() == ERROR_TAIL {
            run.tail.pop_front();
        }
        run.tail.push_back((run.bar.elapsed(), line));
        let shown = run.tail.len().min(TAIL_LINES);
        while run.tail_bars.len() < shown {
            let after = run.tail_bars.last().unwrap_or(&run.bar);
            let bar = self
                .multi
                .insert_after(after, ProgressBar::new_spinner().with_style(style(TAIL)));
            run.tail_bars.push(bar);
        }
        let last = run.tail.range(run.tail.len() - shown..);
        for (bar, (_, line)) in run.tail_bars.iter().zip(last) {
            bar.set_message(line.clone());
        }
    }

    /// Ends a step: its live lines go, a static line takes their place above the live area.
    fn end(
        &self,
        st: &mut TtyState,
        step: usize,
        ending: Ending,
        elapsed: Option<Duration>,
    ) -> std::io::Result<()> {
        let run = st.running.remove(&step);
        let secs = match (elapsed, &run) {
            (Some(e), _) => e.as_secs_f64(),
            (None, Some(r)) => r.bar.elapsed().as_secs_f64(),
            (None, None) => 0.0,
        };
        if let Some(run) = run {
            self.clear(run);
        }
        st.ended += 1;
        self.count(st);
        let status = match ending {
            Ending::Done => "",
            Ending::Cached => "CACHED ",
            Ending::Error => "ERROR ",
            Ending::Canceled => "CANCELED ",
        };
        let name = sanitize(&st.names.get(step));
        self.multi
            .println(self.fit(&format!(" => {status}{name}"), &format!("{secs:.1}s")))
    }

    fn end_phase(&self, st: &mut TtyState) -> std::io::Result<()> {
        if let Some((bar, what)) = st.phase.take() {
            let secs = bar.elapsed().as_secs_f64();
            bar.finish_and_clear();
            self.multi.remove(&bar);
            self.multi
                .println(self.fit(&format!(" => {}", sanitize(&what)), &format!("{secs:.1}s")))?;
        }
        Ok(())
    }

    fn clear(&self, run: Running) {
        for bar in run.tail_bars.iter().chain([&run.bar]) {
            bar.finish_and_clear();
            self.multi.remove(bar);
        }
    }

    fn count(&self, st: &TtyState) {
        self.header
            .set_message(format!("({}/{})", st.ended, st.names.0.len()));
    }

    /// `left` and `right` on one terminal line: `left` truncated (by display width, so never
    /// inside a character) to leave room for `right`, which is aligned to the right edge.
    fn fit(&self, left: &str, right: &str) -> String {
        let width = usize::from((self.width)()).max(1);
        if right.is_empty() {
            return truncate_str(left, width, "...").into_owned();
        }
        let room = width.saturating_sub(measure_text_width(right) + 1);
        let left = truncate_str(left, room, "...");
        let pad = width.saturating_sub(measure_text_width(&left) + measure_text_width(right));
        let line = format!("{left}{:pad$}{right}", "");
        truncate_str(&line, width, "").into_owned()
    }

    fn finish(&self) -> std::io::Result<()> {
        let mut st = lock(&self.state);
        if st.finished {
            return Ok(());
        }
        st.finished = true;
        for (_, run) in std::mem::take(&mut st.running) {
            self.clear(run);
        }
        let total = st.names.0.len();
        let all = if total > 0 && st.ended == total {
            " FINISHED"
        } else {
            ""
        };
        self.header
            .finish_with_message(format!("({}/{total}){all}", st.ended));
        self.end_phase(&mut st)?;
        let lint = std::mem::take(&mut st.lint);
        if !lint.is_empty() {
            for line in lint_summary(&lint).lines() {
                self.multi.println(sanitize(line))?;
            }
        }
        Ok(())
    }
}

/// A template known to be valid; the `secs` key is the bar's time in BuildKit's `1.2s` form.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key("secs", |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
        })
}

/// A line of build output made safe to draw: escape sequences and control characters (which
/// could move the cursor or restyle the terminal) are dropped, tabs become spaces, and only
/// the text after the last carriage return is kept, as a terminal would show it.
fn sanitize(line: &str) -> String {
    let visible = line.rsplit('\r').next().unwrap_or_default();
    let mut out = String::with_capacity(visible.len());
    let mut chars = visible.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS and the like: up to BEL or ST (ESC \).
                Some(']' | 'P' | '_' | '^' | 'X') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An indicatif terminal over any writer, with ANSI cursor movement (ECMA-48 CUU/CUD/CUF/CUB
/// and EL); the size is stderr's.
struct WriterTerm {
    out: Mutex<Box<dyn Write + Send>>,
}

impl fmt::Debug for WriterTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriterTerm")
    }
}

impl WriterTerm {
    fn write(&self, s: &str) -> std::io::Result<()> {
        lock(&self.out).write_all(s.as_bytes())
    }

    fn csi(&self, n: usize, code: char) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}{code}"))
    }
}

impl indicatif::TermLike for WriterTerm {
    fn width(&self) -> u16 {
        stderr_width()
    }

    fn height(&self) -> u16 {
        console::Term::stderr()
            .size_checked()
            .map_or(24, |(rows, _)| rows)
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.csi(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.csi(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.csi(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.csi(n, 'D')
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.write("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        lock(&self.out).flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln::builder::LogStream;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    /// A clock that moves 0.25s each time it is read.
    fn ticking_clock() -> Clock {
        let reads = AtomicU64::new(0);
        Box::new(move || Duration::from_millis(250 * reads.fetch_add(1, Ordering::Relaxed)))
    }

    fn steps() -> Vec<StepInfo> {
        [
            "[internal] load build context",
            "[1/3] FROM docker.io/library/alpine:3.20",
            "[2/3] RUN make",
            "[3/3] COPY --from=build /out /out",
        ]
        .iter()
        .enumerate()
        .map(|(id, name)| StepInfo {
            id,
            name: name.to_string(),
            span: None,
        })
        .collect()
    }

    fn log(step: usize, stream: LogStream, line: &str) -> BuildEvent {
        BuildEvent::Log {
            step,
            stream,
            line: line.into(),
        }
    }

    fn done(step: usize, ms: u64) -> BuildEvent {
        BuildEvent::Done {
            step,
            elapsed: Duration::from_millis(ms),
        }
    }

    /// A build where two steps run at once and one is cached.
    fn success() -> Vec<BuildEvent> {
        vec![
            BuildEvent::Planned { steps: steps() },
            BuildEvent::Cached { step: 1 },
            BuildEvent::Started { step: 0 },
            done(0, 30),
            BuildEvent::Started { step: 2 },
            log(2, LogStream::Stdout, "cc -c main.c"),
            BuildEvent::Started { step: 3 },
            log(3, LogStream::Stdout, "copying"),
            log(2, LogStream::Stderr, "main.c:3: warning: unused variable"),
            done(3, 10),
            done(2, 1234),
            BuildEvent::Phase {
                what: "exporting to image".into(),
            },
            BuildEvent::Finished {
                image_id: "sha256:4f3c".into(),
                names: vec!["docker.io/library/app:latest".into()],
            },
        ]
    }

    /// A build where a step fails and the other running one is canceled.
    fn failure() -> Vec<BuildEvent> {
        vec![
            BuildEvent::Planned { steps: steps() },
            BuildEvent::Started { step: 2 },
            log(2, LogStream::Stdout, "making"),
            BuildEvent::Started { step: 3 },
            log(2, LogStream::Stderr, "make: *** [all] Error 2"),
            BuildEvent::Error {
                step: 2,
                message:
                    "process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n\
                          (the last lines are above)"
                        .into(),
            },
            BuildEvent::Canceled { step: 3 },
        ]
    }

    /// Names, output lines and warnings from outside reach the text looks escaped: no raw
    /// control character, and a newline in a step-less warning cannot start a line of its own.
    #[test]
    fn the_text_looks_escape_what_came_from_outside() {
        let mut hostile = steps();
        hostile[2].name = "[2/3] RUN echo \u{1b}]0;title\u{7}".into();
        let events = || {
            vec![
                BuildEvent::Planned {
                    steps: hostile.clone(),
                },
                BuildEvent::Started { step: 2 },
                log(2, LogStream::Stdout, "\u{1b}[2J\u{9b}2J"),
                BuildEvent::Warning {
                    step: None,
                    message: "cache mount lost\nWARNING: fake".into(),
                },
                done(2, 100),
            ]
        };
        for (mode, quiet) in [(ProgressMode::Plain, false), (ProgressMode::Plain, true)] {
            let text = render(mode, quiet, events());
            assert!(
                !text.chars().any(|c| c.is_control() && c != '\n'),
                "{mode:?} quiet={quiet}: {text:?}"
            );
            assert!(
                !text.lines().any(|l| l.starts_with("WARNING: fake")),
                "{text}"
            );
            assert!(
                text.contains("WARNING: cache mount lost\\nWARNING: fake"),
                "{text}"
            );
        }
        let plain = render(ProgressMode::Plain, false, events());
        assert!(plain.contains("RUN echo \\u{1b}]0;title\\u{7}"), "{plain}");
        assert!(plain.contains("\\u{1b}[2J\\u{9b}2J"), "{plain}");
    }

    /// What a renderer of `mode` prints for `events`, with the ticking clock.
    fn render(mode: ProgressMode, quiet: bool, events: Vec<BuildEvent>) -> String {
        let buf = Buf::default();
        let r = with_clock(mode, quiet, Box::new(buf.clone()), ticking_clock());
        for event in events {
            r.event(event);
        }
        r.finish();
        buf.text()
    }

    #[test]
    fn shared_cache_events_show_in_every_mode() {
        let events = || {
            vec![
                BuildEvent::CacheImported {
                    source: "directory /c (tag kiln-cache)".into(),
                    records: 5,
                    warning: None,
                },
                BuildEvent::CacheImported {
                    source: "directory /d (tag kiln-cache)".into(),
                    records: 0,
                    warning: Some("the cache graph has version 9; building without it".into()),
                },
                BuildEvent::Planned { steps: steps() },
                BuildEvent::Cached { step: 1 },
                BuildEvent::CacheExported {
                    destination: "directory /e (tag kiln-cache)".into(),
                    records: 3,
                    blobs: 2,
                },
            ]
        };
        let cases: [(ProgressMode, bool, &[&str]); 4] = [
            (
                ProgressMode::Plain,
                false,
                &[
                    "importing cache manifest from directory /c (tag kiln-cache)",
                    "5 cache records",
                    "WARNING: the cache graph has version 9; building without it",
                    "exporting cache to directory /e (tag kiln-cache)",
                    "3 cache records, 2 layers copied",
                ],
            ),
            (
                ProgressMode::Tty,
                false,
                &[
                    "importing cache manifest from directory /c (tag kiln-cache): 5 records",
                    "WARNING: cache from directory /d (tag kiln-cache): the cache graph has",
                    "exporting cache to directory /e (tag kiln-cache): 3 records, 2 layers copied",
                ],
            ),
            (
                ProgressMode::Plain,
                true,
                &["WARNING: cache from directory /d (tag kiln-cache): the cache graph has"],
            ),
            (
                ProgressMode::Json,
                false,
                &[r#""event":"cache_imported""#, r#""event":"cache_exported""#],
            ),
        ];
        let mut failures = Vec::new();
        for (mode, quiet, expected) in &cases {
            let text = render(*mode, *quiet, events());
            for line in *expected {
                if !text.contains(line) {
                    failures.push(format!("{mode:?} quiet={quiet}: no {line:?} in\n{text}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        assert_eq!(cases.len(), 4);
    }

    #[test]
    fn plain_looks_like_buildkit() {
        insta::assert_snapshot!(
            "plain_success",
            render(ProgressMode::Plain, false, success())
        );
        insta::assert_snapshot!(
            "plain_failure",
            render(ProgressMode::Plain, false, failure())
        );
    }

    #[test]
    fn json_is_one_event_per_line_with_its_time() {
        for events in [success(), failure()] {
            let count = events.len();
            let text = render(ProgressMode::Json, false, events);
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), count, "{text}");
            for line in &lines {
                let value: serde_json::Value = serde_json::from_str(line).expect("valid json");
                assert!(value["time"].is_f64(), "{line}");
            }
        }
        insta::assert_snapshot!("json_success", render(ProgressMode::Json, false, success()));
        insta::assert_snapshot!("json_failure", render(ProgressMode::Json, false, failure()));
    }

    #[test]
    fn quiet_shows_only_a_failing_step() {
        for mode in [ProgressMode::Plain, ProgressMode::Json, ProgressMode::Tty] {
            assert_eq!(render(mode, true, success()), "", "{mode:?}");
        }
        insta::assert_snapshot!("quiet_failure", render(ProgressMode::Tty, true, failure()));
    }

    #[test]
    fn renderer_writes_to_the_given_writer() {
        let buf = Buf::default();
        let r = renderer(ProgressMode::Plain, false, Box::new(buf.clone()));
        r.event(BuildEvent::Planned { steps: steps() });
        r.event(BuildEvent::Cached { step: 1 });
        drop(r);
        assert_eq!(
            buf.text(),
            "#2 [1/3] FROM docker.io/library/alpine:3.20\n#2 CACHED\n"
        );
    }

    #[test]
    fn phases_before_the_plan_take_the_first_numbers() {
        let events = vec![
            BuildEvent::Phase {
                what: "load metadata for docker.io/library/alpine:3.20".into(),
            },
            BuildEvent::Planned { steps: steps() },
            BuildEvent::Cached { step: 0 },
        ];
        assert_eq!(
            render(ProgressMode::Plain, false, events),
            "#1 load metadata for docker.io/library/alpine:3.20\n#1 ...\n\n\
             #2 [internal] load build context\n#2 CACHED\n\n\
             #1 load metadata for docker.io/library/alpine:3.20\n#1 DONE 0.2s\n"
        );
    }

    #[test]
    fn auto_is_tty_only_on_a_terminal_outside_ci() {
        use ProgressMode::*;
        let cases: &[(ProgressMode, bool, Option<&str>, ProgressMode)] = &[
            (Auto, true, None, Tty),
            (Auto, true, Some(""), Tty),
            (Auto, true, Some("false"), Tty),
            (Auto, true, Some("0"), Tty),
            (Auto, true, Some("true"), Plain),
            (Auto, true, Some("1"), Plain),
            (Auto, false, None, Plain),
            (Tty, false, Some("true"), Tty),
            (Plain, true, None, Plain),
            (Json, true, None, Json),
        ];
        for &(mode, terminal, ci, want) in cases {
            assert_eq!(
                mode.resolve(terminal, ci),
                want,
                "{mode:?} {terminal} {ci:?}"
            );
        }
    }

    #[test]
    fn sanitize_keeps_only_printable_text() {
        let cases = [
            ("plain", "plain"),
            ("a\tb", "a b"),
            ("\x1b[1;31mred\x1b[0m", "red"),
            ("\x1b]0;title\x07after", "after"),
            ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("10%\r50%\r100%", "100%"),
            ("bell\x07 del\x7f c1\u{9b}", "bell del c1"),
            ("é漢字", "é漢字"),
            ("cut\x1b[", "cut"),
            ("cut\x1b", "cut"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "{input:?}");
        }
    }

    #[test]
    fn fit_truncates_by_display_width() {
        let tty = Tty::new(ProgressDrawTarget::hidden(), None, Box::new(|| 20));
        let cases = [
            (" => short", "1.0s", " => short       1.0s"),
            (" => ééééééééééééééééééééé", "1.0s", " => éééééééé... 1.0s"),
            (" => 漢字漢字漢字漢字漢字", "1.0s", " => 漢字漢字... 1.0s"),
            (" => => naming to x", "", " => => naming to x"),
            (" => => naming to docker.io/x", "", " => => naming to ..."),
        ];
        for (left, right, want) in cases {
            let got = tty.fit(left, right);
            assert_eq!(got, want, "{left:?}");
            assert!(measure_text_width(&got) <= 20, "{got:?}");
        }
    }

    #[test]
    fn tty_shows_running_steps_with_their_output_and_ended_ones_as_lines() {
        let term = indicatif::InMemoryTerm::new(30, 60);
        let target = ProgressDrawTarget::term_like(Box::new(term.clone()));
        let r = Renderer {
            kind: Kind::Tty(Tty::new(target, None, Box::new(|| 60))),
        };
        let mut planned = steps();
        planned[3].name = format!("[3/3] RUN {}END", "é".repeat(80));
        r.event(BuildEvent::Planned { steps: planned });
        r.event(BuildEvent::Cached { step: 1 });
        r.event(BuildEvent::Started { step: 2 });
        for i in 0..10 {
            r.event(log(2, LogStream::Stdout, &format!("output line {i}")));
        }
        let screen = term.contents();
        for want in [
            "[+] Building",
            "(1/4)",
            " => CACHED [1/3] FROM docker.io/library/alpine:3.20",
            "[2/3] RUN make",
            "output line 4",
            "output line 9",
        ] {
            assert!(screen.contains(want), "{want:?} not in\n{screen}");
        }
        assert!(
            !screen.contains("output line 3"),
            "only the tail:\n{screen}"
        );

        r.event(BuildEvent::Started { step: 3 });
        let screen = term.contents();
        assert!(screen.contains("[3/3] RUN éé"), "{screen}");
        assert!(!screen.contains("END"), "not truncated:\n{screen}");

        r.event(done(2, 1234));
        r.event(BuildEvent::Error {
            step: 3,
            message: "boom".into(),
        });
        r.event(BuildEvent::Cached { step: 0 });
        r.finish();
        let screen = term.contents();
        for want in [
            " => [2/3] RUN make",
            "1.2s",
            " => ERROR [3/3] RUN éé",
            "(4/4) FINISHED",
        ] {
            assert!(screen.contains(want), "{want:?} not in\n{screen}");
        }
        assert!(
            !screen.contains("output line"),
            "the tail stays after the step:\n{screen}"
        );
        // Step lines are cut to the width; the failed step's name in full above its output.
        let step_lines: Vec<&str> = screen.lines().filter(|l| l.starts_with(" => ")).collect();
        assert_eq!(step_lines.len(), 4, "{screen}");
        assert!(step_lines.iter().all(|l| !l.contains("END")), "{screen}");
        assert!(screen.contains(" > [3/3] RUN "), "{screen}");
    }

    #[test]
    fn styles_parse() {
        for template in [HEADER, RUNNING, TAIL] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
