//! `kiln build` end to end through the binary, on a busybox base built `FROM scratch` in each
//! test's own store: every instruction's effect on the image config, filesystem and history;
//! multi-stage builds and `--target`; the cache (what a context edit re-runs, `--no-cache`,
//! `--no-cache-filter`, `--explain-cache`); a failing RUN; the outputs (`-q`, `--iidfile`,
//! `--metadata-file`, `-o`); a Dockerfile from stdin and a build without a context; Ctrl-C;
//! and confinement (no host file reaches an image through COPY or a RUN).
//!
//! Which steps ran and which came from the cache is read from `--progress json` events.

use crate::support;
use crate::support::{Kiln, Output, kiln};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Child;

/// The base every test builds first and tags `base`: busybox with its applets, a sticky `/tmp`,
/// `/etc/passwd` and `/etc/group` (root, nobody, app 1234:4321), and `CMD ["sh"]`.
pub(crate) const BASE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
RUN mkdir -p /etc /tmp && chmod 1777 /tmp && printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\napp:x:1234:4321::/home/app:/bin/sh\n' > /etc/passwd && printf 'root:x:0:\nnogroup:x:65534:\napp:x:4321:\n' > /etc/group
CMD ["sh"]
"#;

/// How many history entries [`BASE`] makes (one per instruction after FROM).
const BASE_HISTORY: usize = 4;

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A store of its own in a temporary directory, with the busybox `base` image built in it.
pub(crate) struct Builder {
    pub(crate) root: tempfile::TempDir,
    pub(crate) busybox: PathBuf,
}

/// A [`Builder`] with `base` built, or `None` (after a skip notice) without root or busybox.
pub(crate) fn builder() -> Option<Builder> {
    support::root()?;
    let busybox = support::busybox()?;
    let builder = Builder {
        root: tempfile::tempdir().expect("temp dir"),
        busybox,
    };
    let ctx = builder.context(&[("Dockerfile", BASE)]);
    builder.build(ctx.path(), &["-t", "base"]).ok();
    Some(builder)
}

/// One `kiln build --progress json` run: how it ended and its events.
pub(crate) struct Built {
    pub(crate) out: Output,
    pub(crate) events: Events,
}

impl Built {
    /// Asserts the build succeeded; returns the image ID it printed in its `finished` event.
    pub(crate) fn ok(&self) -> String {
        assert_eq!(
            self.out.status.code(),
            Some(0),
            "build failed:\n{}",
            self.out.stderr_str()
        );
        self.events
            .image
            .clone()
            .unwrap_or_else(|| panic!("no finished event:\n{}", self.out.stderr_str()))
    }

    /// Asserts the build failed with exit code 1 and printed nothing on stdout; returns stderr.
    pub(crate) fn fails(&self) -> String {
        assert_eq!(
            self.out.status.code(),
            Some(1),
            "build did not fail:\n{}",
            self.out.stderr_str()
        );
        assert_eq!(
            self.out.stdout_str(),
            "",
            "a failing build printed on stdout"
        );
        self.out.stderr_str()
    }
}

impl Builder {
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// `kiln --root ROOT ARGS...`.
    pub(crate) fn kiln(&self, args: &[&str]) -> Kiln {
        kiln().root(self.root()).args(args)
    }

    /// A build context holding `items` and a copy of busybox.
    pub(crate) fn context(&self, items: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = support::context(items);
        fs::copy(&self.busybox, dir.path().join("busybox")).expect("copy busybox");
        dir
    }

    /// `kiln build --progress json ARGS CONTEXT`.
    pub(crate) fn build(&self, context: &Path, args: &[&str]) -> Built {
        self.build_with(context, args, None)
    }

    /// [`Builder::build`] with `stdin` on standard input.
    pub(crate) fn build_with(&self, context: &Path, args: &[&str], stdin: Option<&str>) -> Built {
        let context = context.display().to_string();
        let mut all = vec!["build", "--progress", "json"];
        all.extend(args);
        all.push(&context);
        let mut command = self.kiln(&all);
        if let Some(stdin) = stdin {
            command = command.stdin(stdin);
        }
        let out = command.run();
        let events = Events::parse(&out.stderr_str());
        Built { out, events }
    }

    /// `docker inspect`'s object for `image`.
    pub(crate) fn inspect(&self, image: &str) -> Value {
        let out = self.kiln(&["inspect", image]).run().success().stdout_str();
        let mut all: Vec<Value> = serde_json::from_str(&out).expect("inspect prints JSON");
        assert_eq!(all.len(), 1, "{out}");
        all.remove(0)
    }

    /// The `created_by` of every history entry of `image`, oldest first.
    pub(crate) fn history(&self, image: &str) -> Vec<String> {
        let out = self
            .kiln(&[
                "history",
                "--no-trunc",
                "--format",
                "{{json .CreatedBy}}",
                image,
            ])
            .run()
            .success()
            .stdout_str();
        let mut lines: Vec<String> = out
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON string per line"))
            .collect();
        lines.reverse();
        lines
    }

    /// The output of `kiln run --rm --entrypoint CMD IMAGE ARGS...`.
    pub(crate) fn run(&self, image: &str, command: &str, args: &[&str]) -> String {
        let mut all = vec!["run", "--rm", "--entrypoint", command, image];
        all.extend(args);
        self.kiln(&all).run().success().stdout_str()
    }
}

/// What a `--progress json` build reported.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// Step names by step id, from the `planned` event.
    names: Vec<String>,
    started: BTreeSet<usize>,
    cached: BTreeSet<usize>,
    errors: Vec<(usize, String)>,
    /// The image ID of the `finished` event.
    image: Option<String>,
}

impl Events {
    /// Reads the JSON lines of `stderr`; the error report after them is plain text.
    pub(crate) fn parse(stderr: &str) -> Events {
        let mut events = Events::default();
        for line in stderr.lines().filter(|l| l.starts_with('{')) {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad JSON event {line:?}: {e}"));
            let step = || {
                event["step"]
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .unwrap_or_else(|| panic!("event without a step: {line}"))
            };
            match event["event"].as_str() {
                Some("planned") => {
                    let steps = event["steps"].as_array().expect("planned has steps");
                    for (i, s) in steps.iter().enumerate() {
                        assert_eq!(s["id"], json!(i), "step ids are their positions");
                        events
                            .names
                            .push(s["name"].as_str().expect("step name").to_string());
                    }
                }
                Some("started") => {
                    events.started.insert(step());
                }
                Some("cached") => {
                    events.cached.insert(step());
                }
                Some("error") => events.errors.push((
                    step(),
                    event["message"].as_str().unwrap_or_default().to_string(),
                )),
                Some("finished") => {
                    events.image = event["image_id"].as_str().map(str::to_string);
                }
                _ => {}
            }
        }
        events
    }

    /// The instruction of step `id` without its `[stage i/n] ` prefix.
    pub(crate) fn instruction(&self, id: usize) -> &str {
        let name = self.names.get(id).map_or("", String::as_str);
        name.split_once("] ").map_or(name, |(_, rest)| rest)
    }

    /// The instructions of the steps that ran, in step order.
    pub(crate) fn ran(&self) -> Vec<&str> {
        self.started
            .iter()
            .map(|&id| self.instruction(id))
            .collect()
    }

    /// The whole names (`[linux/arm64 build 2/3] RUN make`) of the steps that ran, in step
    /// order.
    pub(crate) fn ran_names(&self) -> Vec<&str> {
        self.started
            .iter()
            .map(|&id| self.names.get(id).map_or("", String::as_str))
            .collect()
    }

    /// The instructions of the steps that came from the cache, in step order.
    pub(crate) fn hits(&self) -> Vec<&str> {
        self.cached.iter().map(|&id| self.instruction(id)).collect()
    }

    /// Every planned step's instruction, in step order.
    pub(crate) fn all(&self) -> Vec<&str> {
        (0..self.names.len())
            .map(|id| self.instruction(id))
            .collect()
    }
}

/// A gzip-compressed tar of regular files.
fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        tar.append_data(&mut header, name, data.as_bytes())
            .expect("append");
    }
    tar.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

/// What a path of an exported root filesystem is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    File(String),
    Dir,
    Link(String),
    Absent,
}

pub(crate) fn file(text: &str) -> Entry {
    Entry::File(text.to_string())
}

pub(crate) fn link(target: &str) -> Entry {
    Entry::Link(target.to_string())
}

/// What `path` is on disk.
pub(crate) fn entry_at(path: &Path) -> Entry {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Entry::Absent;
    };
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path).expect("read link");
        return Entry::Link(target.display().to_string());
    }
    if meta.is_dir() {
        return Entry::Dir;
    }
    Entry::File(fs::read_to_string(path).expect("read file"))
}

// ---------------------------------------------------------------------------------------------
// 1. Instructions
// ---------------------------------------------------------------------------------------------

/// Every instruction at once, `FROM base`. Line numbers matter to the history check below.
const EVERYTHING: &str = r#"FROM base
ENV GREETING=hello DIR=/envdir
ARG VERSION=1.0
ARG OVERRIDE=default
RUN echo "$GREETING $VERSION $OVERRIDE" > /run-env
WORKDIR $DIR
WORKDIR rel
COPY one.txt ./
COPY one.txt $DIR/from-env
COPY dir /dircontents/
COPY *.conf /globs/
COPY one.txt /renamed
COPY --chown=app:app one.txt /owned
COPY --chown=app one.txt /owned-by-name
COPY --chown=1500:1600 one.txt /owned-by-id
COPY --chmod=0600 one.txt /moded
COPY link /followed/
ADD arch.tar.gz /added/
COPY <<EOF /heredoc.txt
inline $GREETING
EOF
RUN <<EOF
echo from-heredoc > /heredoc-run
EOF
LABEL a=b "c d"=e
EXPOSE 8080/udp 9090
USER nobody
RUN id -un > /tmp/who; echo "$HOME" >> /tmp/who
USER app
WORKDIR /appdir
RUN id -u > /appdir/made-by
USER root
RUN printf '#!/bin/sh\necho "$@" > /shell-args\n' > /bin/myshell && chmod 755 /bin/myshell
SHELL ["/bin/myshell", "-x"]
RUN hello world
VOLUME /data
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=5s --retries=2 CMD echo ok
ONBUILD RUN echo triggered > /onbuild
MAINTAINER someone <s@example.com>
ENTRYPOINT ["/bin/echo"]
CMD ["x"]
"#;

/// The first word of each history entry [`EVERYTHING`] adds: one per instruction after FROM,
/// except ONBUILD, which BuildKit does not record (`dispatchOnbuild` only sets the config).
const EVERYTHING_HISTORY: &str = "ENV ARG ARG RUN WORKDIR WORKDIR COPY COPY COPY COPY COPY COPY \
    COPY COPY COPY COPY ADD COPY RUN LABEL EXPOSE USER RUN USER WORKDIR RUN USER RUN SHELL RUN \
    VOLUME STOPSIGNAL HEALTHCHECK MAINTAINER ENTRYPOINT CMD";

fn everything_context(builder: &Builder) -> tempfile::TempDir {
    let ctx = builder.context(&[
        ("Dockerfile", EVERYTHING),
        ("one.txt", "one\n"),
        ("dir/a.txt", "a\n"),
        ("dir/sub/b.txt", "b\n"),
        ("g1.conf", "g1\n"),
        ("g2.conf", "g2\n"),
        ("notes.txt", "not a .conf\n"),
    ]);
    symlink("a.txt", ctx.path().join("dir/inner-link")).expect("symlink");
    symlink("one.txt", ctx.path().join("link")).expect("symlink");
    fs::write(
        ctx.path().join("arch.tar.gz"),
        tar_gz(&[("t.txt", "in the tar\n"), ("deep/u.txt", "deeper\n")]),
    )
    .expect("write archive");
    ctx
}

#[test]
fn every_instruction_shapes_the_config() {
    let Some(builder) = builder() else { return };
    let ctx = everything_context(&builder);
    let built = builder.build(
        ctx.path(),
        &[
            "-t",
            "everything",
            "--build-arg",
            "OVERRIDE=cli",
            "--label",
            "lk=lv",
        ],
    );
    built.ok();
    let image = builder.inspect("everything");
    let cases: &[(&str, Value)] = &[
        // ARGs are not persisted; ENV is, after the base's PATH.
        (
            "/Config/Env",
            json!([PATH_ENV, "GREETING=hello", "DIR=/envdir"]),
        ),
        ("/Config/Labels", json!({"a": "b", "c d": "e", "lk": "lv"})),
        (
            "/Config/ExposedPorts",
            json!({"8080/udp": {}, "9090/tcp": {}}),
        ),
        ("/Config/User", json!("root")),
        ("/Config/WorkingDir", json!("/appdir")),
        ("/Config/Shell", json!(["/bin/myshell", "-x"])),
        ("/Config/Volumes", json!({"/data": {}})),
        ("/Config/StopSignal", json!("SIGUSR1")),
        (
            "/Config/Healthcheck",
            json!({"Test": ["CMD-SHELL", "echo ok"], "Interval": 5_000_000_000u64, "Retries": 2}),
        ),
        ("/Config/OnBuild", json!(["RUN echo triggered > /onbuild"])),
        ("/Config/Entrypoint", json!(["/bin/echo"])),
        ("/Config/Cmd", json!(["x"])),
        ("/Author", json!("someone <s@example.com>")),
        ("/Os", json!("linux")),
    ];
    let mut failures = Vec::new();
    for (pointer, expected) in cases {
        let found = image.pointer(pointer).cloned().unwrap_or(Value::Null);
        if &found != expected {
            failures.push(format!("{pointer}: expected {expected}, found {found}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 14);
    // The image runs its ENTRYPOINT with its CMD.
    assert_eq!(
        builder
            .kiln(&["run", "--rm", "everything"])
            .run()
            .success()
            .stdout_str(),
        "x\n"
    );
}

#[test]
fn every_instruction_shapes_the_filesystem() {
    let Some(builder) = builder() else { return };
    let ctx = everything_context(&builder);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    let built = builder.build(
        ctx.path(),
        &["--build-arg", "OVERRIDE=cli", "-o", dest.as_str()],
    );
    built.ok();
    let fs_root = out.path().join("fs");
    // (path, what it is, mode, owner)
    type Case = (&'static str, Entry, Option<u32>, Option<(u32, u32)>);
    let cases: Vec<Case> = vec![
        // ENV and ARG (the --build-arg value over the default) in a RUN.
        ("run-env", file("hello 1.0 cli\n"), None, None),
        // WORKDIR from ENV, then relative to it; COPY to ./ lands there.
        ("envdir/rel", Entry::Dir, Some(0o755), Some((0, 0))),
        ("envdir/rel/one.txt", file("one\n"), None, None),
        ("envdir/from-env", file("one\n"), None, None),
        // A directory source copies its contents, links as links.
        ("dircontents/a.txt", file("a\n"), None, None),
        ("dircontents/sub/b.txt", file("b\n"), None, None),
        ("dircontents/inner-link", link("a.txt"), None, None),
        ("dircontents/dir", Entry::Absent, None, None),
        ("globs/g1.conf", file("g1\n"), None, None),
        ("globs/g2.conf", file("g2\n"), None, None),
        ("globs/notes.txt", Entry::Absent, None, None),
        ("renamed", file("one\n"), Some(0o644), Some((0, 0))),
        // --chown names resolve in the image's /etc/passwd and /etc/group; a user alone takes
        // its primary group.
        ("owned", file("one\n"), None, Some((1234, 4321))),
        ("owned-by-name", file("one\n"), None, Some((1234, 4321))),
        ("owned-by-id", file("one\n"), None, Some((1500, 1600))),
        ("moded", file("one\n"), Some(0o600), Some((0, 0))),
        // A source that is itself a symlink is followed (BuildKit's FollowSymlinks).
        ("followed/link", file("one\n"), None, None),
        // A local tar.gz is unpacked by ADD.
        ("added/t.txt", file("in the tar\n"), None, None),
        ("added/deep/u.txt", file("deeper\n"), None, None),
        ("added/arch.tar.gz", Entry::Absent, None, None),
        ("heredoc.txt", file("inline hello\n"), None, None),
        ("heredoc-run", file("from-heredoc\n"), None, None),
        // RUN as USER nobody, with its HOME from /etc/passwd.
        (
            "tmp/who",
            file("nobody\n/nonexistent\n"),
            None,
            Some((65534, 65534)),
        ),
        // WORKDIR under USER app is created owned by app.
        ("appdir", Entry::Dir, None, Some((1234, 4321))),
        ("appdir/made-by", file("1234\n"), None, Some((1234, 4321))),
        // SHELL runs the shell-form RUN through the new shell.
        ("shell-args", file("-x hello world\n"), None, None),
        // ONBUILD does not run in the image that declares it.
        ("onbuild", Entry::Absent, None, None),
    ];
    let mut failures = Vec::new();
    for (path, expected, mode, owner) in &cases {
        let full = fs_root.join(path);
        let found = entry_at(&full);
        if &found != expected {
            failures.push(format!("{path}: expected {expected:?}, found {found:?}"));
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&full) else {
            continue;
        };
        if let Some(mode) = mode
            && meta.permissions().mode() & 0o7777 != *mode
        {
            failures.push(format!(
                "{path}: mode {:o}, expected {mode:o}",
                meta.permissions().mode() & 0o7777
            ));
        }
        if let Some(owner) = owner
            && (meta.uid(), meta.gid()) != *owner
        {
            failures.push(format!(
                "{path}: owner {}:{}, expected {}:{}",
                meta.uid(),
                meta.gid(),
                owner.0,
                owner.1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 27);
}

#[test]
fn history_has_one_entry_per_instruction() {
    let Some(builder) = builder() else { return };
    let ctx = everything_context(&builder);
    builder
        .build(
            ctx.path(),
            &["-t", "everything", "--build-arg", "OVERRIDE=cli"],
        )
        .ok();
    let history = builder.history("everything");
    let base = builder.history("base");
    // FROM scratch adds no entry; an exec-form RUN is its argv, a shell-form one its shell's.
    assert_eq!(base.len(), BASE_HISTORY, "{base:#?}");
    assert_eq!(base[0], "COPY busybox /bin/busybox # buildkit");
    assert_eq!(base[1], "RUN /bin/busybox --install -s /bin # buildkit");
    assert!(
        base[2].starts_with("RUN /bin/sh -c mkdir -p /etc /tmp && chmod 1777 /tmp"),
        "{base:#?}"
    );
    assert_eq!(base[3], "CMD [\"sh\"]");
    // The base's entries first, unchanged, then one per instruction after FROM.
    assert_eq!(history.get(..BASE_HISTORY), Some(base.as_slice()));
    let added: Vec<&str> = history
        .iter()
        .skip(BASE_HISTORY)
        .map(|line| line.split(' ').next().unwrap_or(""))
        .collect();
    let expected: Vec<&str> = EVERYTHING_HISTORY.split_whitespace().collect();
    assert_eq!(added, expected, "{history:#?}");
    let exact = [
        (0, "ENV GREETING=hello DIR=/envdir"),
        (1, "ARG VERSION=1.0"),
        (
            3,
            "RUN |2 VERSION=1.0 OVERRIDE=cli /bin/sh -c echo \"$GREETING $VERSION $OVERRIDE\" > /run-env # buildkit",
        ),
        (4, "WORKDIR /envdir"),
        (5, "WORKDIR /envdir/rel"),
        (11, "COPY --chown=app:app one.txt /owned # buildkit"),
        (17, "COPY <<EOF /heredoc.txt # buildkit"),
        (
            29,
            "RUN |2 VERSION=1.0 OVERRIDE=cli /bin/myshell -x hello world # buildkit",
        ),
        (33, "MAINTAINER someone <s@example.com>"),
        (35, "CMD [\"x\"]"),
    ];
    for (index, line) in exact {
        assert_eq!(
            history.get(BASE_HISTORY + index).map(String::as_str),
            Some(line),
            "entry {index}"
        );
    }
}

#[test]
fn onbuild_triggers_run_in_a_child_build() {
    let Some(builder) = builder() else { return };
    let parent = builder.context(&[(
        "Dockerfile",
        "FROM base\nONBUILD RUN echo triggered > /onbuild\nONBUILD ENV FROM_TRIGGER=yes\n",
    )]);
    builder.build(parent.path(), &["-t", "parent"]).ok();
    let child = builder.context(&[("Dockerfile", "FROM parent\nRUN echo child > /child\n")]);
    let built = builder.build(child.path(), &["-t", "child"]);
    built.ok();
    assert!(
        built
            .events
            .ran()
            .contains(&"RUN echo triggered > /onbuild"),
        "{:?}",
        built.events.all()
    );
    assert_eq!(builder.run("child", "cat", &["/onbuild"]), "triggered\n");
    let image = builder.inspect("child");
    assert_eq!(image["Config"]["OnBuild"], Value::Null, "not inherited");
    assert_eq!(
        image["Config"]["Env"],
        json!([PATH_ENV, "FROM_TRIGGER=yes"])
    );
}

#[test]
fn cmd_entrypoint_and_shell_forms() {
    let Some(builder) = builder() else { return };
    // (instructions after `FROM base` (CMD ["sh"]), Entrypoint, Cmd, what `kiln run` prints)
    let cases: &[(&str, Value, Value, Option<&str>)] = &[
        (
            "CMD echo shell form",
            Value::Null,
            json!(["/bin/sh", "-c", "echo shell form"]),
            Some("shell form\n"),
        ),
        (
            "CMD [\"echo\", \"exec form\"]",
            Value::Null,
            json!(["echo", "exec form"]),
            Some("exec form\n"),
        ),
        // ENTRYPOINT resets the CMD the stage inherited...
        (
            "ENTRYPOINT [\"/bin/echo\", \"entry\"]",
            json!(["/bin/echo", "entry"]),
            Value::Null,
            Some("entry\n"),
        ),
        (
            "ENTRYPOINT echo from $0",
            json!(["/bin/sh", "-c", "echo from $0"]),
            Value::Null,
            Some("from /bin/sh\n"),
        ),
        // ...but not one set in the same stage.
        (
            "CMD [\"kept\"]\nENTRYPOINT [\"/bin/echo\"]",
            json!(["/bin/echo"]),
            json!(["kept"]),
            Some("kept\n"),
        ),
        (
            "ENTRYPOINT [\"/bin/echo\"]\nCMD [\"a\", \"b\"]",
            json!(["/bin/echo"]),
            json!(["a", "b"]),
            Some("a b\n"),
        ),
        // SHELL changes the shell of later shell forms.
        (
            "SHELL [\"/bin/sh\", \"-ec\"]\nCMD echo hi",
            Value::Null,
            json!(["/bin/sh", "-ec", "echo hi"]),
            Some("hi\n"),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (instructions, entrypoint, cmd, prints)) in cases.iter().enumerate() {
        let tag = format!("forms:{i}");
        let ctx = builder.context(&[("Dockerfile", &format!("FROM base\n{instructions}\n"))]);
        let built = builder.build(ctx.path(), &["-t", &tag]);
        if built.out.status.code() != Some(0) {
            failures.push(format!(
                "{instructions:?}: build failed: {}",
                built.out.stderr_str()
            ));
            continue;
        }
        let config = &builder.inspect(&tag)["Config"];
        if &config["Entrypoint"] != entrypoint || &config["Cmd"] != cmd {
            failures.push(format!(
                "{instructions:?}: Entrypoint {} Cmd {}, expected {entrypoint} {cmd}",
                config["Entrypoint"], config["Cmd"]
            ));
        }
        if let Some(prints) = prints {
            let out = builder.kiln(&["run", "--rm", &tag]).run();
            if out.stdout_str() != *prints {
                failures.push(format!(
                    "{instructions:?}: run printed {:?}, expected {prints:?} ({})",
                    out.stdout_str(),
                    out.stderr_str()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 7);
}

/// A CMD from a parent stage is inherited like one from a base image: the child's ENTRYPOINT
/// clears it (BuildKit v0.32, checked with buildctl; issue 12, item 2).
#[test]
fn entrypoint_clears_a_cmd_inherited_from_a_parent_stage() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM base AS first\nCMD [\"echo\", \"from-first\"]\n\
         FROM first\nENTRYPOINT [\"/bin/echo\", \"ep\"]\n",
    )]);
    builder.build(ctx.path(), &["-t", "child"]).ok();
    let config = &builder.inspect("child")["Config"];
    assert_eq!(config["Entrypoint"], json!(["/bin/echo", "ep"]));
    assert_eq!(config["Cmd"], Value::Null);
    let out = builder.kiln(&["run", "--rm", "child"]).run();
    assert_eq!(out.stdout_str(), "ep\n", "{}", out.stderr_str());
}

/// WORKDIR makes its directory as the USER the way BuildKit's file operations resolve it: an
/// unknown name is root and the build goes on (only a RUN needs the user), `root` needs no
/// /etc/passwd, a uid alone is also the gid; a name on a bare `FROM scratch` fails (BuildKit
/// v0.32 via buildctl; issue 12, item 4).
#[test]
fn workdir_under_a_user_the_image_does_not_know() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM base AS main\nUSER nobody-here\nWORKDIR /unknown\nUSER app\nWORKDIR /app/x\n\
         USER 2000\nWORKDIR /uid\nUSER app:no-such-group\nWORKDIR /named-group\n\
         FROM scratch AS bare\nUSER root\nWORKDIR /w\n\
         FROM scratch AS named\nUSER app\nWORKDIR /w\n",
    )]);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = |name: &str| format!("type=local,dest={}", out.path().join(name).display());
    builder
        .build(ctx.path(), &["--target", "main", "-o", &dest("fs")])
        .ok();
    let owner = |path: &str| {
        let meta = fs::symlink_metadata(out.path().join(path)).expect(path);
        assert!(meta.is_dir(), "{path}");
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner("fs/unknown"), (0, 0));
    assert_eq!(owner("fs/app"), (1234, 4321));
    assert_eq!(owner("fs/app/x"), (1234, 4321));
    assert_eq!(owner("fs/uid"), (2000, 2000));
    assert_eq!(owner("fs/named-group"), (1234, 4321));
    builder
        .build(ctx.path(), &["--target", "bare", "-o", &dest("bare")])
        .ok();
    assert_eq!(owner("bare/w"), (0, 0));
    let stderr = builder
        .build(ctx.path(), &["--target", "named", "-o", &dest("named")])
        .fails()
        .to_string();
    assert!(stderr.contains("FROM scratch"), "{stderr}");
}

/// A RUN on an image deeper than one page of `lowerdir=` (about 45 of kiln's snapshot paths)
/// mounts its root through fsconfig lowerdir+ (issue 12, item 7).
#[test]
fn a_run_on_a_deep_image_mounts_every_layer() {
    let Some(builder) = builder() else { return };
    let files: Vec<(String, String)> = (0..60)
        .map(|i| (format!("f{i:02}"), format!("{i}\n")))
        .collect();
    let mut dockerfile = String::from("FROM base\n");
    for (name, _) in &files {
        dockerfile.push_str(&format!("COPY {name} /deep/{name}\n"));
    }
    dockerfile.push_str("RUN cat /deep/f00 /deep/f59 > /ends && ls /deep | wc -l > /count\n");
    let mut items: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, text)| (name.as_str(), text.as_str()))
        .collect();
    items.push(("Dockerfile", &dockerfile));
    let ctx = builder.context(&items);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().display());
    builder.build(ctx.path(), &["-t", "deep", "-o", &dest]).ok();
    assert_eq!(
        fs::read_to_string(out.path().join("ends")).unwrap(),
        "0\n59\n"
    );
    assert_eq!(
        fs::read_to_string(out.path().join("count")).unwrap().trim(),
        "60"
    );
    // kiln run mounts the same way.
    assert_eq!(builder.run("deep", "cat", &["/count"]).trim(), "60");
}

/// A stage the target does not need is never looked up or pulled: its unreachable base does
/// not fail the build (BuildKit v0.32 via buildctl; issue 12, item 6). A needed one still is.
#[test]
fn an_unused_stage_is_never_resolved() {
    let Some(builder) = builder() else { return };
    let zeros = "0".repeat(64);
    let ctx = builder.context(&[(
        "Dockerfile",
        &format!(
            "FROM 127.0.0.1:1/nope@sha256:{zeros} AS unused\nRUN exit 1\n\
             FROM base AS used\nRUN echo used > /used\n\
             FROM used\nCOPY --from=used /used /copied\n"
        ),
    )]);
    builder.build(ctx.path(), &["-t", "skips-unused"]).ok();
    assert_eq!(builder.run("skips-unused", "cat", &["/copied"]), "used\n");
    let stderr = builder
        .build(ctx.path(), &["--target", "unused"])
        .fails()
        .to_string();
    assert!(stderr.contains("127.0.0.1:1/nope"), "{stderr}");
}

/// `(mode & 0o7777, uid, gid)` of `path`, not following a last symlink.
pub(crate) fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

/// COPY through a symlinked directory of the context follows the link when it stays inside the
/// context, with the context as `/` (`-> sub`, `-> /sub`, `-> ../sub`), and what the link leads
/// to is part of the step's cache key; `.dockerignore` still holds through the link (BuildKit
/// v0.32 via buildctl; issue 12, item 8).
#[test]
fn copy_follows_symlinked_directories_inside_the_context() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nCOPY rel/deeper/b* /glob/\nCOPY rel/foo /rel\nCOPY absroot/foo /absroot\n\
             COPY clamp/foo /clamp\nCOPY clamp /thelink\n",
        ),
        (".dockerignore", "sub/secret\n"),
        ("sub/foo", "foo-in-sub\n"),
        ("sub/secret", "not for images\n"),
        ("sub/deeper/bar", "bar\n"),
    ]);
    symlink("sub", ctx.path().join("rel")).expect("symlink");
    symlink("/sub", ctx.path().join("absroot")).expect("symlink");
    symlink("../sub", ctx.path().join("clamp")).expect("symlink");
    let out = tempfile::tempdir().expect("temp dir");
    let dest = |name: &str| format!("type=local,dest={}", out.path().join(name).display());
    builder.build(ctx.path(), &["-o", &dest("fs")]).ok();
    let at = |path: &str| entry_at(&out.path().join(path));
    for path in ["fs/rel", "fs/absroot", "fs/clamp", "fs/thelink/foo"] {
        assert_eq!(at(path), file("foo-in-sub\n"), "{path}");
    }
    assert_eq!(mode_owner(&out.path().join("fs/rel")), (0o644, 0, 0));
    // The linked directory's contents, without what .dockerignore leaves out.
    assert_eq!(at("fs/thelink/secret"), Entry::Absent);
    assert_eq!(at("fs/thelink/deeper/bar"), file("bar\n"));
    assert_eq!(at("fs/glob/bar"), file("bar\n"));

    // A change behind the link re-runs the steps that read through it (and the later ones);
    // the first step does not read sub/foo.
    fs::write(ctx.path().join("sub/foo"), "changed\n").expect("write");
    let built = builder.build(ctx.path(), &["-o", &dest("fs2")]);
    built.ok();
    assert_eq!(
        built.events.ran(),
        [
            "COPY rel/foo /rel",
            "COPY absroot/foo /absroot",
            "COPY clamp/foo /clamp",
            "COPY clamp /thelink",
        ]
    );
    assert_eq!(at("fs2/rel"), file("changed\n"));
    assert_eq!(at("fs2/thelink/foo"), file("changed\n"));
    let built = builder.build(ctx.path(), &["-o", &dest("fs3")]);
    built.ok();
    assert_eq!(built.events.ran(), Vec::<&str>::new());

    // A file .dockerignore leaves out is not reached through the link either.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM base\nCOPY rel/secret /s\n",
    )
    .expect("write");
    let stderr = builder
        .build(ctx.path(), &["-o", &dest("ignored")])
        .fails()
        .to_string();
    assert!(
        stderr.contains("file not found in build context") && stderr.contains("rel/secret"),
        "{stderr}"
    );
    assert!(!stderr.contains("not for images"), "{stderr}");
}

/// A COPY of a heredoc builds when nothing else reads the context (BuildKit makes the file in
/// scratch and does not transfer the context for it): 0644 (or --chmod), owned 0:0, with or
/// without a context directory (buildctl v0.32; issue 12, item 9).
#[test]
fn a_heredoc_copy_builds_when_nothing_reads_the_context() {
    let Some(builder) = builder() else { return };
    let dockerfile = "FROM base\nCOPY <<EOF /x.txt\nhello heredoc\nEOF\n\
                      COPY --chmod=755 <<EOF /y.sh\n#!/bin/sh\nEOF\n";
    let ctx = builder.context(&[("Dockerfile", dockerfile), ("other", "unrelated\n")]);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = |name: &str| format!("type=local,dest={}", out.path().join(name).display());
    builder.build(ctx.path(), &["-o", &dest("fs")]).ok();
    let fs_root = out.path().join("fs");
    assert_eq!(entry_at(&fs_root.join("x.txt")), file("hello heredoc\n"));
    assert_eq!(mode_owner(&fs_root.join("x.txt")), (0o644, 0, 0));
    assert_eq!(entry_at(&fs_root.join("y.sh")), file("#!/bin/sh\n"));
    assert_eq!(mode_owner(&fs_root.join("y.sh")), (0o755, 0, 0));
    assert_eq!(entry_at(&fs_root.join("other")), Entry::Absent);
    // The same without any context (`-`), then cached.
    for _ in 0..2 {
        builder
            .build_with(
                Path::new("-"),
                &["-o", &dest("no-context")],
                Some(dockerfile),
            )
            .ok();
        let path = out.path().join("no-context/x.txt");
        assert_eq!(entry_at(&path), file("hello heredoc\n"));
        assert_eq!(mode_owner(&path), (0o644, 0, 0));
    }
}

/// `ADD`/`COPY --chmod` of a directory: an octal mode also makes the destination directory and
/// every missing parent with that mode (only the 0777 bits), existing directories keep theirs; a
/// symbolic mode leaves the directories made 0755 (buildctl v0.32; issue 12, item 11).
#[test]
fn chmod_applies_to_the_directories_a_copy_makes() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nRUN mkdir -m 700 /pre /pre2\n\
             ADD --chmod=777 dir /dst\nCOPY --chmod=777 dir /dst2\nCOPY dir /dst3\n\
             COPY --chmod=u+x,g=r dir /dst4\nCOPY --chmod=777 dir /existing/\n\
             ADD --chmod=777 dir /add-existing/\nCOPY --chmod=777 dir /pre/\n\
             ADD --chmod=777 dir /pre2\nCOPY --chmod=777 dir /p/q/dst\n\
             COPY --chmod=777 dir/a /fileparent/x/a\nCOPY --chmod=u+x dir /s/t/dst\n\
             COPY --chmod=4755 dir/a /sp/q/\n",
        ),
        ("dir/a", "a\n"),
        ("dir/sub/b", "b\n"),
    ]);
    let set_mode = |path: &str, mode: u32| {
        fs::set_permissions(ctx.path().join(path), fs::Permissions::from_mode(mode))
            .expect("chmod");
    };
    set_mode("dir", 0o750);
    set_mode("dir/a", 0o600);
    set_mode("dir/sub", 0o700);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("fs").display());
    builder.build(ctx.path(), &["-o", &dest]).ok();
    let fs_root = out.path().join("fs");
    let mut failures = Vec::new();
    let mut check = |path: &str, mode: u32| {
        let got = mode_owner(&fs_root.join(path));
        if got != (mode, 0, 0) {
            failures.push(format!(
                "{path}: {:o} {}:{}, want {mode:o} 0:0",
                got.0, got.1, got.2
            ));
        }
    };
    for top in [
        "dst",
        "dst2",
        "existing",
        "add-existing",
        "p",
        "p/q",
        "p/q/dst",
    ] {
        check(top, 0o777);
        if top.ends_with("q") || top == "p" {
            continue;
        }
        for below in ["a", "sub", "sub/b"] {
            check(&format!("{top}/{below}"), 0o777);
        }
    }
    // Without --chmod the destination made is 0755 (the source directory's 0750 is not copied).
    check("dst3", 0o755);
    check("dst3/a", 0o600);
    check("dst3/sub", 0o700);
    check("dst3/sub/b", 0o644);
    // A symbolic mode changes what is copied, not the directories made.
    check("dst4", 0o755);
    check("dst4/a", 0o740);
    check("dst4/sub", 0o740);
    check("dst4/sub/b", 0o744);
    // Existing directories keep their mode.
    for existing in ["pre", "pre2"] {
        check(existing, 0o700);
        check(&format!("{existing}/a"), 0o777);
        check(&format!("{existing}/sub/b"), 0o777);
    }
    check("fileparent", 0o777);
    check("fileparent/x", 0o777);
    check("fileparent/x/a", 0o777);
    for made in ["s", "s/t", "s/t/dst"] {
        check(made, 0o755);
    }
    check("s/t/dst/a", 0o700);
    check("sp", 0o755);
    check("sp/q", 0o755);
    check("sp/q/a", 0o4755);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `SOURCE_DATE_EPOCH` as BuildKit v0.32 validates it (checked with buildctl; issue 12, item
/// 12): a build arg or a global ARG, whole seconds, `context`, or a source-only stage.
#[test]
fn source_date_epoch_is_validated_as_buildkit_does() {
    let Some(builder) = builder() else { return };
    let build = |dockerfile: &str, args: &[&str]| {
        let ctx = builder.context(&[("Dockerfile", dockerfile), ("local.txt", "x")]);
        builder.build(ctx.path(), args)
    };
    // A global ARG sets the epoch; a stage's own ARG does not count.
    build(
        "ARG SOURCE_DATE_EPOCH=100\nFROM base\nRUN echo > /x\n",
        &["-t", "epoch"],
    )
    .ok();
    assert_eq!(builder.inspect("epoch")["Created"], "1970-01-01T00:01:40Z");
    build("FROM base\nARG SOURCE_DATE_EPOCH=junk\nRUN echo\n", &[]).ok();
    build("ARG SOURCE_DATE_EPOCH=context\nFROM base\nRUN echo\n", &[]).ok();
    let fails = |dockerfile: &str, args: &[&str], message: &str| {
        let built = build(dockerfile, args);
        let stderr = built.fails();
        assert!(
            stderr.contains(message),
            "{dockerfile:?} {args:?}: {stderr}"
        );
    };
    fails(
        "ARG SOURCE_DATE_EPOCH=not-a-timestamp\nFROM base\n",
        &[],
        "invalid SOURCE_DATE_EPOCH \"not-a-timestamp\"",
    );
    fails(
        "FROM base\n",
        &["--build-arg", "SOURCE_DATE_EPOCH=x"],
        "invalid SOURCE_DATE_EPOCH \"x\"",
    );
    let stage = "ARG SOURCE_DATE_EPOCH=src\n";
    for (source_stage, message) in [
        (
            "FROM base AS src\n",
            "SOURCE_DATE_EPOCH stage must use FROM scratch",
        ),
        (
            "FROM scratch AS src\nRUN true\n",
            "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported RUN \
             instruction",
        ),
        (
            "FROM scratch AS src\nARG x=1\n",
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
        ),
        (
            "FROM scratch AS src\nADD local.txt /\n",
            "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) or Git ADD",
        ),
        (
            "FROM scratch AS src\nADD <<EOF /f\nx\nEOF\n",
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source",
        ),
        (
            "FROM scratch AS src\nADD https://a.invalid/1 https://a.invalid/2 /d/\n",
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source",
        ),
        (
            "FROM scratch AS src\nADD https://a.invalid/1 /\nADD https://a.invalid/2 /\n",
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
        ),
    ] {
        fails(&format!("{stage}{source_stage}FROM base\n"), &[], message);
    }
    // The name is looked up as a build context first, so it must be one (BuildKit: "invalid
    // context name SRC: ... must be lowercase").
    fails(
        "FROM scratch AS src\nADD https://a.invalid/1 /\nFROM base\n",
        &["--build-arg", "SOURCE_DATE_EPOCH=SRC"],
        "invalid SOURCE_DATE_EPOCH \"SRC\": invalid context name",
    );
    // A named context of that name comes before the stage: a local directory has no time, so
    // the stage's source (which could not be fetched) is never asked.
    let lib = tempfile::tempdir().expect("temp dir");
    build(
        "FROM scratch AS src\nADD https://a.invalid/1 /\nFROM base\nRUN echo\n",
        &[
            "--build-arg",
            "SOURCE_DATE_EPOCH=src",
            "--build-context",
            &format!("src={}", lib.path().display()),
        ],
    )
    .ok();
}

// ---------------------------------------------------------------------------------------------
// 2. Multi-stage
// ---------------------------------------------------------------------------------------------

const MULTI_STAGE: &str = "\
FROM base AS builder
COPY src.txt /src.txt
RUN cat /src.txt > /built && echo built >> /built

FROM base AS broken
RUN echo broken-ran && exit 7

FROM base AS tester
COPY --from=0 /built /from0
RUN cat /from0 > /tested && echo tested >> /tested

FROM base AS final
COPY --from=builder /built /app/built
COPY --from=tester /tested /app/tested
";

#[test]
fn multi_stage_copies_between_stages_and_target_builds_only_what_it_needs() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("Dockerfile", MULTI_STAGE), ("src.txt", "src\n")]);

    let built = builder.build(ctx.path(), &["-t", "ms"]);
    built.ok();
    assert!(
        !built.events.names.iter().any(|n| n.contains("broken")),
        "an unneeded stage is planned: {:?}",
        built.events.names
    );
    assert_eq!(
        builder.run("ms", "cat", &["/app/built", "/app/tested"]),
        "src\nbuilt\nsrc\nbuilt\ntested\n"
    );

    // --target tester: builder (read through --from=0) and tester, not final.
    let built = builder.build(ctx.path(), &["-t", "ms-tester", "--target", "tester"]);
    built.ok();
    let mut planned: Vec<&str> = built.events.names.iter().map(String::as_str).collect();
    planned.sort();
    assert_eq!(
        planned,
        [
            "[builder 2/3] COPY src.txt /src.txt",
            "[builder 3/3] RUN cat /src.txt > /built && echo built >> /built",
            "[tester 1/3] FROM base",
            "[tester 2/3] COPY --from=0 /built /from0",
            "[tester 3/3] RUN cat /from0 > /tested && echo tested >> /tested",
        ]
    );
    assert_eq!(
        builder.run("ms-tester", "cat", &["/tested"]),
        "src\nbuilt\ntested\n"
    );
    assert_eq!(
        builder
            .kiln(&["run", "--rm", "ms-tester", "ls", "/app"])
            .run()
            .status
            .code(),
        Some(1),
        "the tester image has no /app"
    );

    // The stage the other builds skipped does fail when it is the target.
    let built = builder.build(ctx.path(), &["--target", "broken"]);
    let err = built.fails();
    assert!(err.contains("exit code: 7"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. The cache
// ---------------------------------------------------------------------------------------------

const CACHED: &str = "\
FROM base
COPY a.txt /a
RUN cat /a > /a2
COPY b.txt /b
RUN cat /b > /b2
COPY . /all/
";

const ALL_STEPS: [&str; 6] = [
    "FROM base",
    "COPY a.txt /a",
    "RUN cat /a > /a2",
    "COPY b.txt /b",
    "RUN cat /b > /b2",
    "COPY . /all/",
];

#[test]
fn an_identical_rebuild_is_all_cached_with_the_same_layers() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("Dockerfile", CACHED), ("a.txt", "a\n"), ("b.txt", "b\n")]);
    let first = builder.build(ctx.path(), &["-t", "first"]);
    first.ok();
    assert_eq!(first.events.ran(), &ALL_STEPS[1..]);
    let second = builder.build(ctx.path(), &["-t", "second"]);
    second.ok();
    assert_eq!(second.events.ran(), Vec::<&str>::new());
    assert_eq!(second.events.hits(), ALL_STEPS);
    // The image's times come from the cache records, not the clock: a cached rebuild is the
    // same image.
    assert_eq!(
        builder.inspect("first")["Id"],
        builder.inspect("second")["Id"]
    );
    let layers = |image: &str| builder.inspect(image)["RootFS"]["Layers"].clone();
    assert_eq!(layers("first"), layers("second"));
    assert_eq!(
        layers("first").as_array().map(Vec::len),
        Some(BASE_HISTORY - 1 + 5)
    );
    assert_eq!(
        builder.inspect("first")["Config"],
        builder.inspect("second")["Config"]
    );
}

#[test]
fn context_changes_rerun_only_the_steps_that_read_them_and_later_ones() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        ("Dockerfile", CACHED),
        ("a.txt", "a\n"),
        ("b.txt", "b\n"),
        (".dockerignore", "ignored.txt\n"),
        ("ignored.txt", "ignored\n"),
    ]);
    let dir = ctx.path().to_path_buf();
    let first = builder.build(&dir, &[]);
    first.ok();
    assert_eq!(first.events.ran(), &ALL_STEPS[1..]);

    type Change = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Change, &[&str], Vec<&str>)> = vec![
        (
            "edit the second file",
            Box::new(|d| fs::write(d.join("b.txt"), "b2\n").expect("write")),
            &[],
            vec!["COPY b.txt /b", "RUN cat /b > /b2", "COPY . /all/"],
        ),
        (
            "touch both files (mtime only)",
            Box::new(|d| {
                for name in ["a.txt", "b.txt"] {
                    let file = fs::File::options()
                        .write(true)
                        .open(d.join(name))
                        .expect("open");
                    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
                    file.set_modified(later).expect("set mtime");
                }
            }),
            &[],
            vec![],
        ),
        (
            "chmod the first file",
            Box::new(|d| {
                fs::set_permissions(d.join("a.txt"), fs::Permissions::from_mode(0o600))
                    .expect("chmod")
            }),
            &[],
            ALL_STEPS[1..].to_vec(),
        ),
        (
            "edit a file .dockerignore excludes",
            Box::new(|d| fs::write(d.join("ignored.txt"), "changed\n").expect("write")),
            &[],
            vec![],
        ),
        (
            "add a file only COPY . reads",
            Box::new(|d| fs::write(d.join("new.txt"), "new\n").expect("write")),
            &[],
            vec!["COPY . /all/"],
        ),
        // The base image is read again too (BuildKit resolves it again).
        (
            "--no-cache",
            Box::new(|_| {}),
            &["--no-cache"],
            ALL_STEPS.to_vec(),
        ),
        ("nothing", Box::new(|_| {}), &[], vec![]),
    ];
    let mut failures = Vec::new();
    for (what, change, args, expected) in &cases {
        change(&dir);
        let built = builder.build(&dir, args);
        if built.out.status.code() != Some(0) {
            failures.push(format!("{what}: build failed: {}", built.out.stderr_str()));
            continue;
        }
        if built.events.ran() != *expected {
            failures.push(format!(
                "{what}: ran {:?}, expected {expected:?}",
                built.events.ran()
            ));
        }
        // Every step is accounted for: it ran or came from the cache, never both.
        let both: Vec<_> = built
            .events
            .started
            .intersection(&built.events.cached)
            .collect();
        let reported = built.events.started.len() + built.events.cached.len();
        if !both.is_empty() || reported != ALL_STEPS.len() {
            failures.push(format!(
                "{what}: started {:?} cached {:?} of {:?}",
                built.events.ran(),
                built.events.hits(),
                built.events.all()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 7);

    // The image has the edited file, and the ignored one never made it in.
    let id = builder.build(&dir, &["-t", "edited"]).ok();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(builder.run("edited", "cat", &["/a2", "/b2"]), "a\nb2\n");
    let all = builder.run("edited", "ls", &["-A", "/all"]);
    assert_eq!(
        all,
        ".dockerignore\nDockerfile\na.txt\nb.txt\nbusybox\nnew.txt\n"
    );
}

#[test]
fn what_a_run_sees_is_part_of_its_cache_key() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[]);
    // (instructions before the RUN, build flags, whether the RUN runs), in order: each build
    // reuses what the ones before it left in the cache.
    let cases: &[(&str, &[&str], bool)] = &[
        ("ENV X=1", &[], true),
        ("ENV X=1", &[], false),
        ("ENV X=2", &[], true),
        // Metadata the RUN does not see.
        ("ENV X=2\nLABEL l=1\nCMD [\"x\"]\nEXPOSE 80", &[], false),
        ("ENV X=2", &["--label", "l=2"], false),
        // An ARG without a value adds nothing to the RUN's environment; with one, it does.
        ("ENV X=2\nARG A", &[], false),
        ("ENV X=2\nARG A", &["--build-arg", "A=5"], true),
        (
            "ENV X=2\nARG A",
            &["--build-arg", "A=5", "--build-arg", "UNDECLARED=1"],
            false,
        ),
        ("ENV X=2\nUSER nobody", &[], true),
        ("ENV X=2\nWORKDIR /w", &[], true),
        ("ENV X=2\nSHELL [\"/bin/sh\", \"-ec\"]", &[], true),
        ("ENV X=2", &["--network", "none"], true),
        ("ENV X=2", &[], false),
    ];
    let mut failures = Vec::new();
    for (before, args, runs) in cases {
        let dockerfile = format!("FROM base\n{before}\nRUN echo hi > /tmp/f\n");
        fs::write(ctx.path().join("Dockerfile"), &dockerfile).expect("write");
        let built = builder.build(ctx.path(), args);
        if built.out.status.code() != Some(0) {
            failures.push(format!(
                "{before:?} {args:?}: build failed: {}",
                built.out.stderr_str()
            ));
            continue;
        }
        let ran = built.events.ran().contains(&"RUN echo hi > /tmp/f");
        if ran != *runs {
            failures.push(format!("{before:?} {args:?}: ran {ran}, expected {runs}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 13);
}

#[test]
fn explain_cache_names_the_changed_file() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("Dockerfile", CACHED), ("a.txt", "a\n"), ("b.txt", "b\n")]);
    builder.build(ctx.path(), &[]).ok();
    fs::write(ctx.path().join("b.txt"), "changed\n").expect("write");
    let built = builder.build(ctx.path(), &["--explain-cache"]);
    built.ok();
    let stderr = built.out.stderr_str();
    let explained: Vec<&str> = stderr.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(
        explained.first().copied(),
        Some("cache miss: [4/6] COPY b.txt /b"),
        "{}",
        built.out.stderr_str()
    );
    assert_eq!(
        explained.get(1).copied(),
        Some("  - context file changed: b.txt")
    );
    assert!(
        !explained.iter().any(|l| l.contains("COPY a.txt")),
        "{explained:#?}"
    );
}

#[test]
fn no_cache_filter_reruns_the_named_stage() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("Dockerfile", MULTI_STAGE), ("src.txt", "src\n")]);
    builder.build(ctx.path(), &[]).ok();
    // (--no-cache-filter, the steps that must run). kiln's keys for COPY --from are the source
    // step's key, not the content it copies, so what reads a re-run stage runs again too. The
    // stages share their `FROM base` step, which a filtered stage reads the image for again.
    let cases: &[(&str, &[&str])] = &[
        (
            "tester",
            &[
                "FROM base",
                "COPY --from=0 /built /from0",
                "RUN cat /from0 > /tested && echo tested >> /tested",
                "COPY --from=tester /tested /app/tested",
            ],
        ),
        (
            "final",
            &[
                "FROM base",
                "COPY --from=builder /built /app/built",
                "COPY --from=tester /tested /app/tested",
            ],
        ),
        (
            "builder",
            &[
                "FROM base",
                "COPY src.txt /src.txt",
                "RUN cat /src.txt > /built && echo built >> /built",
                "COPY --from=0 /built /from0",
                "RUN cat /from0 > /tested && echo tested >> /tested",
                "COPY --from=builder /built /app/built",
                "COPY --from=tester /tested /app/tested",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (filter, expected) in cases {
        let built = builder.build(ctx.path(), &["--no-cache-filter", filter]);
        if built.out.status.code() != Some(0) {
            failures.push(format!(
                "{filter}: build failed: {}",
                built.out.stderr_str()
            ));
            continue;
        }
        let mut ran = built.events.ran();
        ran.sort();
        let mut expected = expected.to_vec();
        expected.sort();
        if ran != expected {
            failures.push(format!("{filter}: ran {ran:?}, expected {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 5. A failing RUN
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failing_run_reports_where_and_why_and_leaves_the_store_usable() {
    let Some(builder) = builder() else { return };
    let failing =
        "FROM base\nCOPY a.txt /a\nRUN cat /a; echo to-stderr >&2; exit 3\nRUN echo never\n";
    let ctx = builder.context(&[("Dockerfile", failing), ("a.txt", "from-a\n")]);
    let built = builder.build(ctx.path(), &["-t", "failed"]);
    let err = built.fails().to_string();
    let report: Vec<&str> = err.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(
        report.first().copied(),
        Some(
            "error: [3/4] RUN cat /a; echo to-stderr >&2; exit 3: process \"/bin/sh -c cat /a; \
             echo to-stderr >&2; exit 3\" did not complete successfully: exit code: 3"
        ),
        "{err}"
    );
    let location = format!(" --> {}:3:1", ctx.path().join("Dockerfile").display());
    assert!(report.contains(&location.as_str()), "{err}");
    let help = report
        .iter()
        .position(|l| *l == "  = help: the last lines the command wrote:")
        .unwrap_or_else(|| panic!("no output lines in {err}"));
    let mut tail: Vec<&str> = report[help + 1..].iter().map(|l| l.trim()).collect();
    tail.sort();
    assert_eq!(tail, ["from-a", "to-stderr"], "{err}");
    assert_eq!(
        built.events.ran(),
        ["COPY a.txt /a", "RUN cat /a; echo to-stderr >&2; exit 3"]
    );
    assert_eq!(built.events.errors.len(), 1);
    assert!(built.events.errors[0].1.contains("exit code: 3"));

    // The store still answers, has no half-made image, and the next build reuses the cache.
    let images = builder
        .kiln(&["images", "--format", "{{.Repository}}"])
        .run()
        .success()
        .stdout_str();
    assert_eq!(images, "base\n");
    let fixed = "FROM base\nCOPY a.txt /a\nRUN cat /a > /seen\n";
    fs::write(ctx.path().join("Dockerfile"), fixed).expect("write");
    let built = builder.build(ctx.path(), &["-t", "fixed"]);
    built.ok();
    assert_eq!(built.events.hits(), ["FROM base", "COPY a.txt /a"]);
    assert_eq!(built.events.ran(), ["RUN cat /a > /seen"]);
    assert_eq!(builder.run("fixed", "cat", &["/seen"]), "from-a\n");
}

// ---------------------------------------------------------------------------------------------
// 6. Outputs and inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn quiet_iidfile_metadata_and_every_export() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[
        (
            "Dockerfile",
            "FROM base\nCOPY a.txt /data/a\nCMD [\"cat\", \"/data/a\"]\n",
        ),
        ("a.txt", "exported\n"),
    ]);
    let out = tempfile::tempdir().expect("temp dir");
    let out_path = |name: &str| out.path().join(name).display().to_string();
    let (iid, meta, local, tar, docker) = (
        out_path("iid"),
        out_path("meta.json"),
        out_path("local"),
        out_path("rootfs.tar"),
        out_path("image.tar"),
    );
    let context = ctx.path().display().to_string();
    let result = builder
        .kiln(&[
            "build",
            "-q",
            "-t",
            "out:1",
            "--iidfile",
            &iid,
            "--metadata-file",
            &meta,
            "-o",
            &format!("type=local,dest={local}"),
            "-o",
            &format!("type=tar,dest={tar}"),
            "-o",
            &format!("type=docker,dest={docker}"),
            &context,
        ])
        .run();
    assert_eq!(result.status.code(), Some(0), "{}", result.stderr_str());
    assert_eq!(result.stderr_str(), "", "-q prints nothing else");
    let stdout = result.stdout_str();
    let id = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("{:?}", stdout));
    let hex = id.strip_prefix("sha256:").unwrap_or("");
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let image = builder.inspect("out:1");
    assert_eq!(image["Id"], json!(id));
    assert_eq!(fs::read_to_string(&iid).expect("iidfile"), id);

    let metadata: Value =
        serde_json::from_str(&fs::read_to_string(&meta).expect("metadata file")).expect("JSON");
    assert_eq!(metadata["containerimage.config.digest"], json!(id));
    // The last image export is the docker archive: the metadata names the image as that archive
    // holds it (gzip layers by default, so not the store's manifest), as BuildKit's exporter does.
    let mut docker_archive = tar::Archive::new(fs::File::open(&docker).expect("docker archive"));
    let index: Value = docker_archive
        .entries()
        .expect("entries")
        .map(|entry| entry.expect("entry"))
        .find(|entry| entry.path().expect("path").as_os_str() == "index.json")
        .map(|entry| serde_json::from_reader(entry).expect("index.json"))
        .expect("the docker archive has an index.json");
    assert_eq!(
        metadata["containerimage.digest"],
        index["manifests"][0]["digest"]
    );
    assert_ne!(
        metadata["containerimage.digest"],
        image["Descriptor"]["digest"]
    );
    assert!(
        metadata["image.name"]
            .as_str()
            .is_some_and(|n| n.ends_with("out:1")),
        "{metadata}"
    );

    // type=local: the root filesystem as a directory tree.
    let local = Path::new(&local);
    assert_eq!(entry_at(&local.join("data/a")), file("exported\n"));
    assert_eq!(entry_at(&local.join("bin/sh")), link("/bin/busybox"));
    assert_eq!(
        fs::read(local.join("bin/busybox")).expect("busybox"),
        fs::read(&builder.busybox).expect("busybox")
    );

    // type=tar: the same tree as one tar.
    let mut archive = tar::Archive::new(fs::File::open(&tar).expect("tar"));
    let mut found = None;
    let mut names = BTreeSet::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let name = entry.path().expect("path").display().to_string();
        if name == "data/a" {
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("read");
            found = Some(text);
        }
        names.insert(name);
    }
    assert_eq!(found.as_deref(), Some("exported\n"));
    assert!(
        names.contains("bin/busybox") && names.contains("etc/passwd"),
        "{names:?}"
    );

    // type=docker: `kiln load` brings the same image into another store.
    let other = tempfile::tempdir().expect("temp dir");
    let other_root = other.path().display().to_string();
    kiln()
        .root(&other_root)
        .args(["load", "-q", "-i", &docker])
        .run()
        .success();
    let loaded = kiln()
        .root(&other_root)
        .args(["inspect", "out:1"])
        .run()
        .success()
        .stdout_str();
    let loaded: Vec<Value> = serde_json::from_str(&loaded).expect("JSON");
    assert_eq!(loaded[0]["Id"], json!(id));
    assert_eq!(
        kiln()
            .root(&other_root)
            .args(["run", "--rm", "out:1"])
            .run()
            .success()
            .stdout_str(),
        "exported\n"
    );
}

#[test]
fn dockerfile_from_stdin_with_and_without_a_context() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("a.txt", "from the context\n")]);

    // -f -: the Dockerfile on stdin, the context a directory.
    let built = builder.build_with(
        ctx.path(),
        &["-f", "-", "-t", "stdin-file"],
        Some("FROM base\nCOPY a.txt /a\n"),
    );
    built.ok();
    assert_eq!(
        builder.run("stdin-file", "cat", &["/a"]),
        "from the context\n"
    );

    // Context `-`: the Dockerfile on stdin and no context at all.
    let built = builder.build_with(
        Path::new("-"),
        &["-t", "no-context"],
        Some("FROM base\nRUN echo no context > /n\n"),
    );
    built.ok();
    assert_eq!(builder.run("no-context", "cat", &["/n"]), "no context\n");

    // Without a context, a COPY has nothing to read: a clear error that says so.
    let built = builder.build_with(
        Path::new("-"),
        &[],
        Some("FROM base\nRUN true\nCOPY a.txt /a\n"),
    );
    assert_eq!(
        built.fails(),
        "error: a COPY or ADD reads the build context, but this build has none (the context \
         was `-`)\n  = help: pass a context directory instead of `-`, or COPY from a stage or \
         an image with --from\n"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Ctrl-C
// ---------------------------------------------------------------------------------------------

/// The pids of the processes below `pid` whose command line is `argv`.
fn descendants_running(pid: u32, argv: &[&str]) -> Vec<u32> {
    let mut parents = std::collections::BTreeMap::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.insert(child, ppid);
        }
    }
    let below = |mut p: u32| {
        while let Some(&parent) = parents.get(&p) {
            if parent == pid {
                return true;
            }
            p = parent;
        }
        false
    };
    parents
        .keys()
        .copied()
        .filter(|&p| below(p) && runs(p, argv))
        .collect()
}

/// Whether process `pid` exists with the command line `argv` (a zombie's is empty).
fn runs(pid: u32, argv: &[&str]) -> bool {
    let expected: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == expected)
}

/// Waits for `child`, killing it (and failing) if it has not exited after a long time: a guard
/// against a hung test, not a timing assertion.
fn wait_or_kill(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("kiln did not exit after SIGINT");
}

/// SIGKILL to kiln during a RUN step leaves no process of the step running under the host's
/// pid 1 (issue 18's crash case): the step's sandbox dies with the kiln that made it.
#[test]
fn a_killed_build_leaves_no_step_process() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[("Dockerfile", "FROM base\nRUN sleep 3021\n")]);
    let mut child = builder
        .kiln(&["build", "--progress", "plain"])
        .arg(ctx.path())
        .spawn();
    let sleeping = || support::processes_running(&["sleep", "3021"]);
    assert!(
        support::within(30, || !sleeping().is_empty()),
        "the RUN step never started"
    );
    child.kill().expect("SIGKILL kiln");
    child.wait().expect("wait");
    if !support::within(5, || sleeping().is_empty()) {
        let left = sleeping();
        for pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!("the step's process outlived kiln: {left:?}");
    }
}

#[test]
fn ctrl_c_stops_the_build_and_leaves_nothing_behind() {
    let Some(builder) = builder() else { return };
    let ctx = builder.context(&[(
        "Dockerfile",
        "FROM base\nRUN echo before > /before\nRUN sleep 1000\n",
    )]);
    let mut child = builder
        .kiln(&["build", "--progress", "json"])
        .arg(ctx.path())
        .spawn();
    let kiln_pid = child.id();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut seen = String::new();
    let mut sleep_step = None;
    let mut line = String::new();
    while stderr.read_line(&mut line).expect("read stderr") > 0 {
        seen.push_str(&line);
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["event"] == "planned" {
            sleep_step = event["steps"].as_array().and_then(|steps| {
                steps
                    .iter()
                    .position(|s| s["name"] == "[3/3] RUN sleep 1000")
            });
        }
        if event["event"] == "started" && event["step"].as_u64() == sleep_step.map(|s| s as u64) {
            break;
        }
        line.clear();
    }
    assert!(sleep_step.is_some(), "the RUN never started:\n{seen}");
    // The step has started; its process may need a moment to exec.
    let mut sleepers = Vec::new();
    for _ in 0..600 {
        sleepers = descendants_running(kiln_pid, &["sleep", "1000"]);
        if !sleepers.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !sleepers.is_empty(),
        "no `sleep 1000` below kiln {kiln_pid}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kiln_pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("send SIGINT");
    // Read the rest on a thread, so a kiln that does not exit cannot block the test.
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        rest
    });
    let status = wait_or_kill(&mut child);
    let rest = reader.join().expect("stderr reader");
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("error: the build was canceled"), "{rest}");
    assert!(
        rest.contains(&format!(
            "{{\"event\":\"canceled\",\"step\":{}",
            sleep_step.unwrap_or(0)
        )),
        "{rest}"
    );
    let left: Vec<u32> = sleepers
        .iter()
        .copied()
        .filter(|&p| runs(p, &["sleep", "1000"]))
        .collect();
    assert_eq!(left, Vec::<u32>::new(), "the sandbox outlived the build");
    for tmp in ["tmp", "cache/tmp"] {
        let staged: Vec<_> = fs::read_dir(builder.root().join(tmp))
            .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(
            staged,
            Vec::<std::ffi::OsString>::new(),
            "leftovers in {tmp}/"
        );
    }

    // The store is fine: the next build reuses the step before the canceled one.
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM base\nRUN echo before > /before\nRUN echo after > /after\n",
    )
    .expect("write");
    let built = builder.build(ctx.path(), &["-t", "after"]);
    built.ok();
    assert_eq!(built.events.ran(), ["RUN echo after > /after"]);
    assert_eq!(
        builder.run("after", "cat", &["/before", "/after"]),
        "before\nafter\n"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Confinement
// ---------------------------------------------------------------------------------------------

/// Every regular file under `dir`, recursively, not following links.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).expect("read dir").flatten() {
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

#[test]
fn copy_never_reads_outside_the_context() {
    let Some(builder) = builder() else { return };
    let outer = tempfile::tempdir().expect("temp dir");
    let secret = "HOST-SECRET-not-in-any-image\n";
    fs::write(outer.path().join("outside"), secret).expect("write");
    let ctx_dir = outer.path().join("ctx");
    fs::create_dir(&ctx_dir).expect("mkdir");
    fs::create_dir(ctx_dir.join("d")).expect("mkdir");
    symlink("/etc/passwd", ctx_dir.join("abs-link")).expect("symlink");
    symlink("../../../../../../../etc/passwd", ctx_dir.join("up-link")).expect("symlink");
    symlink("../outside", ctx_dir.join("out-link")).expect("symlink");
    symlink("/etc/passwd", ctx_dir.join("d/inner")).expect("symlink");
    symlink("/etc", ctx_dir.join("etc-dir")).expect("symlink");
    symlink("../../../../../../../etc", ctx_dir.join("up-dir")).expect("symlink");
    symlink("/proc/self/root/etc", ctx_dir.join("proc-dir")).expect("symlink");
    symlink("..", ctx_dir.join("parent-dir")).expect("symlink");
    // The host path of the context's own `d`: not followed either (as BuildKit).
    symlink(ctx_dir.join("d"), ctx_dir.join("host-d")).expect("symlink");
    let host_passwd = fs::read("/etc/passwd").expect("host passwd");

    // (COPY source, Ok(what /dst/x is) or Err(what the error says))
    let cases: &[(&str, Result<Entry, &str>)] = &[
        ("../outside", Err("file not found in build context")),
        ("../../outside", Err("file not found in build context")),
        ("abs-link", Err("file not found in build context")),
        ("up-link", Err("file not found in build context")),
        ("out-link", Err("file not found in build context")),
        // A wildcard that matches a link out of the context fails the same way.
        ("*-link", Err("file not found in build context")),
        // Links to directories are followed only inside the context, as if it were `/`
        // (issue 12, item 8): a host path, `..` chains and /proc never lead out of it.
        ("etc-dir/passwd", Err("file not found in build context")),
        ("up-dir/passwd", Err("file not found in build context")),
        ("proc-dir/passwd", Err("file not found in build context")),
        ("parent-dir/outside", Err("file not found in build context")),
        ("host-d/inner", Err("file not found in build context")),
        // A link inside a copied directory is copied as the link, never followed.
        ("d", Ok(link("/etc/passwd"))),
    ];
    let mut failures = Vec::new();
    for (source, expected) in cases {
        let dockerfile = format!("FROM base\nCOPY {source} /dst/x\n");
        fs::write(ctx_dir.join("Dockerfile"), &dockerfile).expect("write");
        let export = tempfile::tempdir().expect("temp dir");
        let dest = format!("type=local,dest={}", export.path().join("fs").display());
        let built = builder.build(&ctx_dir, &["-o", &dest]);
        let stderr = &built.out.stderr_str();
        if stderr.contains(secret.trim()) {
            failures.push(format!("{source}: the host file's content is in {stderr}"));
        }
        match expected {
            Err(message) => {
                if built.out.status.code() != Some(1) || !stderr.contains(message) {
                    failures.push(format!(
                        "{source}: expected an error with {message:?}: {stderr}"
                    ));
                }
            }
            Ok(entry) => {
                if built.out.status.code() != Some(0) {
                    failures.push(format!("{source}: build failed: {stderr}"));
                    continue;
                }
                let found = entry_at(&export.path().join("fs/dst/x/inner"));
                if &found != entry {
                    failures.push(format!("{source}: /dst/x/inner is {found:?}"));
                }
                for file in files_under(&export.path().join("fs")) {
                    let bytes = fs::read(&file).unwrap_or_default();
                    if bytes == host_passwd || bytes == secret.as_bytes() {
                        failures.push(format!("{source}: host file copied to {}", file.display()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(cases.len(), 12);

    // A link to an absolute path resolves inside the context, which here has its own file.
    fs::create_dir(ctx_dir.join("etc")).expect("mkdir");
    fs::write(ctx_dir.join("etc/passwd"), "context's own passwd\n").expect("write");
    fs::write(ctx_dir.join("Dockerfile"), "FROM base\nCOPY abs-link /x\n").expect("write");
    builder.build(&ctx_dir, &["-t", "scoped"]).ok();
    assert_eq!(
        builder.run("scoped", "cat", &["/x"]),
        "context's own passwd\n"
    );
}

#[test]
fn run_cannot_see_or_touch_host_files() {
    let Some(builder) = builder() else { return };
    let host = tempfile::tempdir().expect("temp dir");
    let marker = host.path().join("host-marker");
    fs::write(&marker, "host\n").expect("write");
    let ctx = builder.context(&[("in-context.txt", "context\n")]);
    let script = format!(
        "FROM base\n\
         RUN if [ -e {marker} ]; then echo host-visible > /leak; fi; \
         if [ -e {ctx}/in-context.txt ]; then echo context-visible >> /leak; fi; \
         cat /etc/passwd > /seen-passwd; \
         mkdir -p {dir} && echo written-inside > {dir}/from-run\n",
        marker = marker.display(),
        ctx = ctx.path().display(),
        dir = host.path().display(),
    );
    fs::write(ctx.path().join("Dockerfile"), script).expect("write");
    builder.build(ctx.path(), &["-t", "confined"]).ok();
    let base_passwd = builder.run("base", "cat", &["/etc/passwd"]);
    assert_eq!(
        builder.run("confined", "cat", &["/seen-passwd"]),
        base_passwd
    );
    let leak = builder
        .kiln(&["run", "--rm", "confined", "cat", "/leak"])
        .run();
    assert_eq!(
        (leak.status.code(), leak.stdout_str().as_str()),
        (Some(1), ""),
        "{}",
        leak.stderr_str()
    );
    // What the RUN wrote went into the image, not to the host.
    assert!(!host.path().join("from-run").exists());
    let inside = format!("{}/from-run", host.path().display());
    assert_eq!(
        builder.run("confined", "cat", &[&inside]),
        "written-inside\n"
    );
    assert_eq!(fs::read_to_string(&marker).expect("marker"), "host\n");
}
