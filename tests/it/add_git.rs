//! `ADD <git ref>`, git build contexts and `--build-context NAME=<git ref>` end to end against
//! git servers each test starts on loopback: `git daemon` (one `--inetd` process per
//! connection, so the test counts connections), git's smart http (`git http-backend` behind
//! a small CGI server that can require a token) and OpenSSH's sshd (an `ssh://` remote through
//! the build's `--ssh default` agent). Covered: branches, lightweight and annotated
//! tags, a commit id, subdirectories (fragment and query forms), submodules, `--keep-git-dir`,
//! `--checksum`, the cache (the same commit is a hit with nothing fetched, a new commit upstream
//! runs the step), mtimes (the checkout's, or the commit's for a context with
//! SOURCE_DATE_EPOCH), credentials (a token that reaches no file of the store, no output and
//! no image), a server that never answers (the time limit), a submodule on the local
//! filesystem (refused), and hostile trees (symlinks to `/` and out of the tree, `..` and
//! `.git` entries, names with newlines and escape sequences).
//!
//! Needs git (Debian package git), and for the ssh test openssh-server (`scripts/test`
//! installs both); skips with a notice without them, and fails instead under `CI=true`.

use crate::build::{Builder, Built, builder};
use crate::support;
use std::fs;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The author and committer time of every test commit: 2021-02-03T04:05:06Z.
pub(crate) const COMMIT_TIME: i64 = 1_612_325_106;

/// Runs git in `dir` with a clean environment and a fixed identity and time; its stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "protocol.file.allow=always",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "kiln")
        .env("GIT_AUTHOR_EMAIL", "kiln@example.com")
        .env("GIT_COMMITTER_NAME", "kiln")
        .env("GIT_COMMITTER_EMAIL", "kiln@example.com")
        .env("GIT_AUTHOR_DATE", format!("@{COMMIT_TIME} +0000"))
        .env("GIT_COMMITTER_DATE", format!("@{COMMIT_TIME} +0000"))
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Loopback git servers over one directory of bare repositories.
pub(crate) struct GitServer {
    root: tempfile::TempDir,
    port: u16,
    http_port: u16,
    /// Connections the git daemon has accepted.
    connections: Arc<AtomicUsize>,
    /// The token the http server requires (`Authorization: basic x-access-token:TOKEN`).
    token: Arc<Mutex<Option<String>>>,
    /// `METHOD PATH` of every http request, and whether it was authorized.
    http_log: Arc<Mutex<Vec<(String, bool)>>>,
}

impl GitServer {
    /// Starts the servers, or `None` (a skip notice; a failure under `CI=true`) without git.
    pub(crate) fn start() -> Option<GitServer> {
        support::tool("git")?;
        let root = tempfile::tempdir().expect("temp dir");
        let connections = Arc::new(AtomicUsize::new(0));
        let daemon = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = daemon.local_addr().expect("address").port();
        let (base, count) = (root.path().to_path_buf(), connections.clone());
        std::thread::spawn(move || {
            for stream in daemon.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                serve_daemon(stream, &base);
            }
        });
        let http = TcpListener::bind("127.0.0.1:0").expect("bind");
        let http_port = http.local_addr().expect("address").port();
        let token: Arc<Mutex<Option<String>>> = Arc::default();
        let http_log: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let (base, required, log) = (root.path().to_path_buf(), token.clone(), http_log.clone());
        std::thread::spawn(move || {
            for stream in http.incoming().flatten() {
                let (base, required, log) = (base.clone(), required.clone(), log.clone());
                std::thread::spawn(move || serve_http(stream, &base, &required, &log));
            }
        });
        Some(GitServer {
            root,
            port,
            http_port,
            connections,
            token,
            http_log,
        })
    }

    /// `git://127.0.0.1:PORT/NAME.git`.
    pub(crate) fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }

    /// `http://127.0.0.1:PORT/NAME.git` (smart http).
    pub(crate) fn http_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.http_port)
    }

    fn http_host(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// A new repository `NAME.git` and a work tree that pushes to it.
    pub(crate) fn repo(&self, name: &str) -> Repo {
        let bare = self.root.path().join(format!("{name}.git"));
        let work = self.root.path().join(format!("{name}.work"));
        fs::create_dir_all(&work).expect("mkdir");
        git(
            self.root.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.to_string_lossy(),
            ],
        );
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["remote", "add", "origin", &bare.to_string_lossy()]);
        Repo { work, bare }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A repository's work tree; [`Repo::commit`] pushes to the served bare repository.
pub(crate) struct Repo {
    pub(crate) work: PathBuf,
    pub(crate) bare: PathBuf,
}

impl Repo {
    pub(crate) fn write(&self, path: &str, content: &str) -> &Repo {
        let file = self.work.join(path);
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(&file, content).expect("write");
        self
    }

    pub(crate) fn symlink(&self, path: &str, target: &str) -> &Repo {
        let link = self.work.join(path);
        fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, link).expect("symlink");
        self
    }

    pub(crate) fn chmod(&self, path: &str, mode: u32) -> &Repo {
        fs::set_permissions(self.work.join(path), fs::Permissions::from_mode(mode)).expect("chmod");
        self
    }

    /// Commits everything and pushes `main` and the tags; the commit id.
    pub(crate) fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.push();
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub(crate) fn push(&self) {
        git(
            &self.work,
            &[
                "push",
                "-q",
                "--force",
                "--tags",
                "origin",
                "HEAD:refs/heads/main",
            ],
        );
    }

    pub(crate) fn tag(&self, name: &str) {
        git(&self.work, &["tag", name]);
        self.push();
    }

    pub(crate) fn annotated_tag(&self, name: &str) -> String {
        git(&self.work, &["tag", "-a", "-m", name, name]);
        self.push();
        git(&self.work, &["rev-parse", name])
    }
}

/// One `git daemon --inetd` per connection, its stdio the socket.
fn serve_daemon(stream: TcpStream, base: &Path) {
    let (Ok(reader), writer) = (stream.try_clone(), stream) else {
        return;
    };
    let child = Command::new("git")
        .args(["daemon", "--inetd", "--export-all", "--informative-errors"])
        .arg("--enable=receive-pack")
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", base)
        .stdin(Stdio::from(OwnedFd::from(reader)))
        .stdout(Stdio::from(OwnedFd::from(writer)))
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        std::thread::spawn(move || child.wait());
    }
}

/// One http request: `git http-backend` as a CGI program, after checking the token when one
/// is required.
fn serve_http(
    stream: TcpStream,
    base: &Path,
    required: &Mutex<Option<String>>,
    log: &Mutex<Vec<(String, bool)>>,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, target) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(length) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
    } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                return;
            }
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                return;
            };
            let mut chunk = vec![0; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                return;
            }
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let mut out = stream;
    let authorized = match required.lock().unwrap().as_deref() {
        None => true,
        Some(token) => header("authorization").is_some_and(|value| {
            use base64::Engine as _;
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
            value.split_once(' ').is_some_and(|(scheme, b64)| {
                scheme.eq_ignore_ascii_case("basic") && b64 == expected
            })
        }),
    };
    log.lock()
        .unwrap()
        .push((format!("{method} {target}"), authorized));
    if !authorized {
        let _ = out.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", base)
        .env("GIT_PROJECT_ROOT", base)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut response = Vec::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut response);
    let _ = writer.join();
    let _ = child.wait();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            response
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let Some((end, gap)) = split else { return };
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let content = &response[end + gap..];
    let mut status = "200 OK".to_string();
    let mut reply = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string();
            }
            Some(_) => reply.push_str(&format!("{line}\r\n")),
            None => {}
        }
    }
    let _ = out.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{reply}Content-Length: {}\r\nConnection: close\r\n\r\n",
            content.len()
        )
        .as_bytes(),
    );
    let _ = out.write_all(content);
    let _ = out.flush();
}

/// The server and the busybox builder, or `None` (after a notice) when either is missing.
fn setup() -> Option<(GitServer, Builder)> {
    let server = GitServer::start()?;
    let builder = builder()?;
    Some((server, builder))
}

/// Builds `dockerfile` (with `args` before the context) as `img`, exported to a new directory.
fn build(builder: &Builder, dockerfile: &str, args: &[&str]) -> (Built, tempfile::TempDir) {
    let ctx = builder.context(&[("Dockerfile", dockerfile)]);
    let out = tempfile::tempdir().expect("temp dir");
    let dest = format!("type=local,dest={}", out.path().join("root").display());
    let mut all = vec!["-t", "img", "-o", &dest];
    all.extend(args);
    let built = builder.build(ctx.path(), &all);
    (built, out)
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join("root").join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn exists(root: &Path, path: &str) -> bool {
    fs::symlink_metadata(root.join("root").join(path)).is_ok()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

#[test]
fn branches_tags_commits_and_subdirectories() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let repo = server.repo("refs");
    repo.write("README", "first\n")
        .write("sub/dir/file.txt", "in sub\n")
        .write("bin/tool", "#!/bin/sh\n")
        .chmod("bin/tool", 0o755)
        .symlink("link", "README");
    let first = repo.commit("first");
    repo.tag("v1");
    repo.write("README", "second\n");
    let second = repo.commit("second");
    let annotated = repo.annotated_tag("v2");
    assert_ne!(annotated, second, "an annotated tag is its own object");
    git(&repo.work, &["checkout", "-q", "-b", "feature"]);
    repo.write("feature.txt", "feature\n");
    git(&repo.work, &["add", "-A"]);
    git(&repo.work, &["commit", "-q", "-m", "feature"]);
    git(&repo.work, &["push", "-q", "origin", "feature"]);
    let url = server.url("refs");
    let started = now();
    let dockerfile = format!(
        "FROM scratch\n\
         ADD {url} /default/\n\
         ADD {url}#main /main/\n\
         ADD {url}#feature /feature\n\
         ADD {url}#v1 /v1/\n\
         ADD {url}#v2:sub /v2sub/\n\
         ADD {url}#{first} /first/\n\
         ADD {url}?ref=v1&subdir=sub/dir /query/\n\
         ADD {url}?tag=v2 /tag/\n\
         ADD {url}?branch=feature&subdir=/../sub/ /branch/\n"
    );
    let (built, out) = build(&builder, &dockerfile, &[]);
    built.ok();
    let root = out.path();
    assert_eq!(read(root, "default/README"), "second\n");
    assert_eq!(read(root, "main/README"), "second\n");
    assert_eq!(read(root, "feature/feature.txt"), "feature\n");
    assert_eq!(read(root, "v1/README"), "first\n");
    assert!(!exists(root, "v1/feature.txt"));
    assert_eq!(read(root, "v2sub/dir/file.txt"), "in sub\n");
    assert!(!exists(root, "v2sub/README"), "only the subdirectory");
    assert_eq!(read(root, "first/README"), "first\n");
    assert_eq!(read(root, "query/file.txt"), "in sub\n");
    assert_eq!(read(root, "tag/README"), "second\n");
    assert_eq!(read(root, "branch/dir/file.txt"), "in sub\n");
    for dir in ["default", "main", "v1", "first"] {
        assert!(!exists(root, &format!("{dir}/.git")), "{dir} has no .git");
    }
    // Files as git checks them out (0644, 0755 for executables), symlinks kept, owned by
    // root, with the checkout's time (BuildKit's default), not the commit's.
    let meta = |path: &str| fs::symlink_metadata(root.join("root").join(path)).expect("stat");
    assert_eq!(meta("main/README").mode() & 0o7777, 0o644);
    assert_eq!(meta("main/bin/tool").mode() & 0o7777, 0o755);
    assert_eq!(meta("main/sub").mode() & 0o7777, 0o755);
    assert_eq!(
        fs::read_link(root.join("root/main/link")).expect("link"),
        PathBuf::from("README")
    );
    assert_eq!(
        (meta("main/README").uid(), meta("main/README").gid()),
        (0, 0)
    );
    let mtime = meta("main/README").mtime();
    assert!(
        mtime >= started - 1 && mtime <= now() + 1,
        "checkout time, not the commit's ({COMMIT_TIME}): {mtime}"
    );
    // The destination directory takes the checkout root's mode and time.
    assert_eq!(meta("main").mode() & 0o7777, 0o755);
    assert!(meta("main").mtime() >= started - 1);
    // BuildKit's history line: the sources and destination as written.
    let history = builder.history("img");
    assert!(
        history
            .iter()
            .any(|h| h == &format!("ADD {url}#v2:sub /v2sub/ # buildkit")),
        "{history:#?}"
    );

    // An existing destination directory takes the checkout root's mode too (BuildKit copies a
    // git source from `/` without CopyDirContentsOnly); --link and --exclude apply.
    let (built, out) = build(
        &builder,
        &format!(
            "FROM base\nRUN mkdir -m 700 /existing\nADD {url}#v1 /existing/\n\
             ADD --link --exclude=bin {url}#v1 /linked/\n"
        ),
        &[],
    );
    built.ok();
    let existing = fs::metadata(out.path().join("root/existing")).expect("stat");
    assert_eq!(existing.mode() & 0o7777, 0o755);
    assert_eq!(read(out.path(), "existing/README"), "first\n");
    assert_eq!(read(out.path(), "linked/README"), "first\n");
    assert!(!exists(out.path(), "linked/bin"));

    // Errors: a ref that is not there, a subdir that is not a directory, a bad query.
    for (add, words) in [
        (format!("ADD {url}#nope /x/"), "does not contain ref nope"),
        (format!("ADD {url}#main:README /x/"), "is not a directory"),
        (format!("ADD {url}#main:missing /x/"), "no such directory"),
        (
            format!("ADD {url}?color=red /x/"),
            "unexpected query \"color\"",
        ),
        (
            format!("COPY {url} /x/"),
            "source can't be a git ref for COPY",
        ),
    ] {
        let (failed, _) = build(&builder, &format!("FROM scratch\n{add}\n"), &[]);
        let stderr = failed.fails();
        assert!(stderr.contains(words), "{add}: {stderr}");
    }
}

#[test]
fn the_cache_key_is_the_commit() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let repo = server.repo("cached");
    repo.write("version", "1\n");
    repo.commit("one");
    let url = server.url("cached");
    let dockerfile = format!("FROM scratch\nADD {url}#main /src/\n");
    let add = format!("ADD {url}#main /src/");

    let (first, out) = build(&builder, &dockerfile, &[]);
    first.ok();
    assert_eq!(first.events.ran(), [add.as_str()]);
    assert_eq!(read(out.path(), "src/version"), "1\n");
    let first_mtime = fs::metadata(out.path().join("root/src/version"))
        .expect("stat")
        .mtime();

    // The same commit: a cache hit with one ls-remote and nothing fetched (the repositories
    // kiln keeps are gone and stay gone).
    let repos = builder.root().join("cache/git/repos");
    assert!(
        repos.is_dir(),
        "the first build fetched into {}",
        repos.display()
    );
    fs::remove_dir_all(&repos).expect("remove the repositories");
    let before = server.connections();
    let (second, _) = build(&builder, &dockerfile, &[]);
    second.ok();
    assert!(second.events.ran().is_empty(), "{:?}", second.events.ran());
    assert_eq!(second.events.hits(), ["FROM scratch", add.as_str()]);
    assert_eq!(server.connections() - before, 1, "one ls-remote");
    assert!(!repos.exists(), "a cache hit fetched nothing");

    // A new commit upstream: the step runs and has the new content.
    repo.write("version", "2\n");
    repo.commit("two");
    let (third, out) = build(&builder, &dockerfile, &[]);
    third.ok();
    assert_eq!(third.events.ran(), [add.as_str()]);
    assert_eq!(read(out.path(), "src/version"), "2\n");

    let third_mtime = fs::metadata(out.path().join("root/src/version"))
        .expect("stat")
        .mtime();
    assert!(third_mtime >= first_mtime);

    // Another step of the same commit, named by its id, asks the server nothing and copies the
    // checkout the store keeps (the same files, the same times).
    let two = git(&repo.work, &["rev-parse", "HEAD"]);
    let before = server.connections();
    let (fourth, out) = build(
        &builder,
        &format!("FROM scratch\nADD {url}#{two} /again/\n"),
        &[],
    );
    fourth.ok();
    assert_eq!(
        fourth.events.ran(),
        [format!("ADD {url}#{two} /again/").as_str()]
    );
    assert_eq!(read(out.path(), "again/version"), "2\n");
    assert_eq!(server.connections(), before, "nothing asked");
    let again = fs::metadata(out.path().join("root/again/version"))
        .expect("stat")
        .mtime();
    assert_eq!(again, third_mtime, "the same checkout");
}

#[test]
fn keep_git_dir_and_checksum() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let repo = server.repo("kept");
    repo.write("a.txt", "a\n");
    let commit = repo.commit("one");
    let tag = repo.annotated_tag("v1");
    let url = server.url("kept");
    let short = &commit[..12];
    let dockerfile = format!(
        "FROM scratch\n\
         ADD --keep-git-dir {url}#main /flag/\n\
         ADD {url}?ref=v1&keep-git-dir=true /query/\n\
         ADD --checksum={short} {url}#main /sum/\n\
         ADD {url}?ref=v1&checksum={tag} /tagsum/\n\
         ADD {url}#v1:. /plain/\n"
    );
    let (built, out) = build(&builder, &dockerfile, &[]);
    built.ok();
    let root = out.path().join("root");
    for dir in ["flag", "query"] {
        let checkout = root.join(dir);
        assert_eq!(git(&checkout, &["rev-parse", "HEAD"]), commit, "{dir}");
        assert_eq!(git(&checkout, &["status", "--porcelain"]), "", "{dir}");
        assert_eq!(
            git(&checkout, &["remote", "get-url", "origin"]),
            url,
            "{dir}"
        );
        assert!(
            !checkout.join(".git/objects/info/alternates").exists(),
            "a kept .git needs nothing outside it"
        );
    }
    assert_eq!(git(&root.join("query"), &["rev-parse", "v1"]), tag);
    assert_eq!(
        fs::read_to_string(root.join("sum/a.txt")).expect("read"),
        "a\n"
    );
    assert!(root.join("tagsum/a.txt").is_file());
    assert!(!root.join("plain/.git").exists());

    for (add, words) in [
        (
            format!("ADD --checksum=0000000 {url}#main /x/"),
            "expected checksum to match 0000000",
        ),
        (
            format!("ADD --checksum=nothex {url}#main /x/"),
            "invalid checksum nothex for Git URL",
        ),
        (
            format!("ADD --keep-git-dir=false {url}?keep-git-dir=true /x/"),
            "inconsistent keep-git-dir configuration",
        ),
        (
            format!("ADD --checksum=aaaa {url}?checksum=bbbb /x/"),
            "checksum mismatch",
        ),
        (
            format!("ADD --checksum=1234 {url}#{commit} /x/"),
            "expected checksum to match 1234",
        ),
    ] {
        let (failed, _) = build(&builder, &format!("FROM scratch\n{add}\n"), &[]);
        let stderr = failed.fails();
        assert!(stderr.contains(words), "{add}: {stderr}");
    }
}

#[test]
fn submodules_are_checked_out_unless_asked_not_to() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let library = server.repo("library");
    library.write("lib.txt", "library\n");
    library.commit("library");
    let app = server.repo("app");
    app.write("app.txt", "app\n");
    git(
        &app.work,
        &[
            "submodule",
            "add",
            "-q",
            &server.url("library"),
            "vendor/library",
        ],
    );
    app.commit("with a submodule");
    let url = server.url("app");
    let dockerfile = format!(
        "FROM scratch\n\
         ADD {url}#main /with/\n\
         ADD {url}?ref=main&submodules=false /without/\n\
         ADD --keep-git-dir {url}#main /kept/\n"
    );
    let (built, out) = build(&builder, &dockerfile, &[]);
    built.ok();
    let root = out.path();
    assert_eq!(read(root, "with/vendor/library/lib.txt"), "library\n");
    assert!(
        !exists(root, "with/vendor/library/.git"),
        "no .git file pointing nowhere"
    );
    assert!(exists(root, "without/vendor/library"));
    assert!(!exists(root, "without/vendor/library/lib.txt"));
    let kept = root.join("root/kept/vendor/library");
    assert_eq!(read(root, "kept/vendor/library/lib.txt"), "library\n");
    assert_eq!(git(&kept, &["status", "--porcelain"]), "");

    // A submodule on kiln's own filesystem is refused (git's file transport is for the user).
    let local = server.repo("local-sub");
    local.write("x", "x\n");
    git(
        &local.work,
        &[
            "submodule",
            "add",
            "-q",
            &library.bare.to_string_lossy(),
            "from-disk",
        ],
    );
    local.commit("a local submodule");
    let (failed, _) = build(
        &builder,
        &format!("FROM scratch\nADD {}#main /x/\n", server.url("local-sub")),
        &[],
    );
    let stderr = failed.fails();
    assert!(stderr.contains("transport 'file' not allowed"), "{stderr}");
}

#[test]
fn hostile_trees_stay_inside_their_root() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let repo = server.repo("hostile");
    repo.write("ok.txt", "ok\n")
        .symlink("root", "/")
        .symlink("up", "../../../../..")
        .symlink("etc", "/etc")
        .write("name\nwith newline", "newline\n")
        .write("esc\u{1b}[31mred", "escape\n");
    repo.commit("links and names");
    let url = server.url("hostile");
    let (built, out) = build(
        &builder,
        &format!("FROM scratch\nADD {url}#main /h/\n"),
        &[],
    );
    built.ok();
    let root = out.path().join("root");
    assert_eq!(fs::read_link(root.join("h/root")).unwrap(), Path::new("/"));
    assert_eq!(
        fs::read_link(root.join("h/up")).unwrap(),
        Path::new("../../../../..")
    );
    assert_eq!(
        fs::read_link(root.join("h/etc")).unwrap(),
        Path::new("/etc")
    );
    assert_eq!(read(out.path(), "h/name\nwith newline"), "newline\n");
    assert_eq!(read(out.path(), "h/esc\u{1b}[31mred"), "escape\n");
    assert!(
        !root.join("etc/passwd").exists(),
        "nothing written through a link"
    );

    // A subdirectory through a symlink is refused (BuildKit's validateDirsOnly); an escape
    // sequence in a message is printed escaped (here the Dockerfile's own, which in a git
    // context comes from the repository too).
    for (subdir, words) in [
        ("root/etc", "\"root\" is a symlink"),
        ("etc", "\"etc\" is a symlink"),
        ("up/tmp", "\"up\" is a symlink"),
        ("ok.txt", "is not a directory"),
        ("esc\u{1b}[31mred", "esc\\u{1b}[31mred"),
    ] {
        let (failed, _) = build(
            &builder,
            &format!("FROM scratch\nADD {url}#main:{subdir} /x/\n"),
            &[],
        );
        let stderr = failed.fails();
        assert!(stderr.contains(words), "{subdir:?}: {stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "a raw escape reached the terminal"
        );
    }

    // Trees git must not check out: `..` and `.git` entries (a server can send them).
    let blob = hash_object(&repo.bare, "pwned\n");
    let inner = mktree(&repo.bare, &format!("100644 blob {blob}\tx\n"));
    for (name, entry) in [
        (
            "dotdot",
            format!("040000 tree {inner}\t..\n100644 blob {blob}\tok\n"),
        ),
        ("dotgit", format!("040000 tree {inner}\t.GIT\n")),
        // The path git refuses is named in the message, its escape sequence escaped.
        ("escaped", {
            let dotdot = mktree(&repo.bare, &format!("040000 tree {inner}\t..\n"));
            format!("040000 tree {dotdot}\tesc\u{1b}[2J\n")
        }),
    ] {
        let tree = mktree(&repo.bare, &entry);
        let commit = git(&repo.bare, &["commit-tree", "-m", name, &tree]);
        git(
            &repo.bare,
            &["update-ref", &format!("refs/heads/{name}"), &commit],
        );
        let (failed, _) = build(
            &builder,
            &format!("FROM scratch\nADD {url}#{name} /x/\n"),
            &[],
        );
        let stderr = failed.fails();
        assert!(
            stderr.contains("has a path git refuses to check out"),
            "{name}: {stderr}"
        );
        if name == "escaped" {
            assert!(stderr.contains("esc\\u{1b}[2J/../x"), "{stderr}");
        }
        assert!(
            !stderr.contains('\u{1b}'),
            "a raw escape reached the terminal"
        );
    }
    let leftovers: Vec<_> = fs::read_dir(builder.root().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

fn hash_object(repo: &Path, content: &str) -> String {
    let path = repo.join("blob.tmp");
    fs::write(&path, content).expect("write");
    let id = git(repo, &["hash-object", "-w", &path.to_string_lossy()]);
    fs::remove_file(path).expect("remove");
    id
}

fn mktree(repo: &Path, entries: &str) -> String {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["mktree", "--missing"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git mktree");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(entries.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("git mktree");
    assert!(out.status.success(), "mktree {entries:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn git_contexts_and_named_git_contexts() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let repo = server.repo("ctx");
    repo.write("README", "top\n")
        .write(
            "app/Dockerfile",
            "FROM scratch\nCOPY . /app/\nCOPY --from=extra /lib.txt /extra.txt\n",
        )
        .write(
            "app/build/alt.Dockerfile",
            "FROM scratch\nCOPY main.c /alt/\n",
        )
        .write("app/main.c", "int main;\n")
        .write("app/secret.key", "ignored? no\n")
        .write("app/.dockerignore", "secret.key\n")
        .symlink("app/passwd", "/etc/passwd")
        .symlink("app/evil.Dockerfile", "/etc/passwd")
        .write("lib/lib.txt", "lib\n");
    repo.commit("context");
    let url = server.url("ctx");
    let out = tempfile::tempdir().expect("temp dir");
    let dest = |name: &str| format!("type=local,dest={}", out.path().join(name).display());
    let extra = format!("extra={url}#main:lib");
    let context = format!("{url}#main:app");

    // The Dockerfile from the subdirectory; its .dockerignore not applied (BuildKit applies
    // none to a git context); the named context a repository too.
    let built = builder
        .kiln(&[
            "build",
            "--progress",
            "json",
            "-t",
            "ctx",
            "--build-context",
            &extra,
            "-o",
            &dest("one"),
            &context,
        ])
        .run();
    assert!(built.status.success(), "{}", built.stderr_str());
    let one = out.path().join("one");
    assert_eq!(
        fs::read_to_string(one.join("app/main.c")).unwrap(),
        "int main;\n"
    );
    assert!(one.join("app/secret.key").is_file(), "no .dockerignore");
    assert!(one.join("app/.dockerignore").is_file());
    assert_eq!(fs::read_to_string(one.join("extra.txt")).unwrap(), "lib\n");
    assert_eq!(
        fs::read_link(one.join("app/passwd")).unwrap(),
        Path::new("/etc/passwd")
    );

    // `-f` is inside the context's subdirectory; SOURCE_DATE_EPOCH gives the commit's time.
    let alt = builder
        .kiln(&[
            "build",
            "-q",
            "-f",
            "build/alt.Dockerfile",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1",
            "-o",
            &dest("alt"),
            &context,
        ])
        .run();
    assert!(alt.status.success(), "{}", alt.stderr_str());
    let file = out.path().join("alt/alt/main.c");
    assert_eq!(fs::read_to_string(&file).unwrap(), "int main;\n");
    assert_eq!(fs::metadata(&file).unwrap().mtime(), COMMIT_TIME);

    // A Dockerfile, or a COPY, that leads out of the repository through a symlink does not.
    let evil = builder
        .kiln(&["build", "-f", "evil.Dockerfile", &context])
        .run();
    assert!(!evil.status.success());
    assert!(
        evil.stderr_str()
            .contains("leads outside the build context"),
        "{}",
        evil.stderr_str()
    );
    let escape = server.repo("escape");
    escape
        .write("Dockerfile", "FROM scratch\nCOPY root/etc/passwd /stolen\n")
        .symlink("root", "/");
    escape.commit("escape");
    let stolen = builder
        .kiln(&["build", &format!("{}#main", server.url("escape"))])
        .run();
    assert!(!stolen.status.success());
    assert!(
        stolen.stderr_str().contains("not found in build context"),
        "{}",
        stolen.stderr_str()
    );

    // --dry-run plans the repository's Dockerfile.
    let dry = builder
        .kiln(&["build", "--dry-run", "--build-context", &extra, &context])
        .run();
    assert!(dry.status.success(), "{}", dry.stderr_str());
    assert!(
        dry.stdout_str().contains("COPY . /app/"),
        "{}",
        dry.stdout_str()
    );
}

#[test]
fn smart_http_with_a_token_that_reaches_nothing() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let repo = server.repo("private");
    repo.write("data.txt", "private\n");
    repo.commit("private");
    let token = "kiln-git-token-5e1f2a";
    *server.token.lock().unwrap() = Some(token.to_string());
    let url = server.http_url("private");
    let dockerfile = format!("FROM scratch\nADD {url}#main /p/\n");

    let (denied, _) = build(&builder, &dockerfile, &[]);
    let stderr = denied.fails();
    assert!(stderr.contains(&url), "{stderr}");

    let secrets = tempfile::tempdir().expect("temp dir");
    let file = secrets.path().join("token");
    fs::write(&file, token).expect("write token");
    let secret = format!(
        "id=GIT_AUTH_TOKEN.{},src={}",
        server.http_host(),
        file.display()
    );
    let (built, out) = build(&builder, &dockerfile, &["--secret", &secret]);
    built.ok();
    assert_eq!(read(out.path(), "p/data.txt"), "private\n");
    let log = server.http_log.lock().unwrap().clone();
    assert!(log.iter().any(|(_, authorized)| *authorized), "{log:?}");
    assert!(!built.out.stderr_str().contains(token));

    // A --keep-git-dir checkout with the token: nothing of it in the .git or the store.
    let (kept, out) = build(
        &builder,
        &format!("FROM scratch\nADD --keep-git-dir {url}#main /k/\n"),
        &["--secret", &secret],
    );
    kept.ok();
    use base64::Engine as _;
    let header =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    let mut found = Vec::new();
    for needle in [token, header.as_str()] {
        find_bytes(builder.root(), needle.as_bytes(), &mut found);
        find_bytes(out.path(), needle.as_bytes(), &mut found);
    }
    assert!(found.is_empty(), "the token is in {found:?}");
}

/// Every file under `dir` (symlinks not followed) whose bytes contain `needle`.
fn find_bytes(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            find_bytes(&path, needle, found);
        } else if kind.is_file()
            && fs::read(&path).is_ok_and(|data| {
                data.windows(needle.len()).any(|w| w == needle)
                    || gunzipped(&data)
                        .is_some_and(|d| d.windows(needle.len()).any(|w| w == needle))
            })
        {
            found.push(path);
        }
    }
}

fn gunzipped(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return None;
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

#[test]
fn a_server_that_never_answers_fails_within_the_time_limit() {
    let Some((_server, builder)) = setup() else {
        return;
    };
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("address").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let ctx = builder.context(&[(
        "Dockerfile",
        &format!("FROM scratch\nADD git://127.0.0.1:{port}/r.git#main /x/\n"),
    )]);
    let started = std::time::Instant::now();
    let out = builder
        .kiln(&["build", &ctx.path().display().to_string()])
        .env("KILN_GIT_TIMEOUT", "2")
        .run();
    assert!(!out.status.success());
    let stderr = out.stderr_str();
    assert!(stderr.contains("did not finish within 2 s"), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// An OpenSSH server on a loopback port that lets root in with one key, over the test's
/// repositories; killed on drop.
struct SshServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl SshServer {
    /// Starts sshd with `authorized` (a public key line) as root's only key, or `None` (a skip
    /// notice; a failure under `CI=true`) without openssh-server.
    fn start(authorized: &str) -> Option<SshServer> {
        let sshd = PathBuf::from("/usr/sbin/sshd");
        support::require(
            "/usr/sbin/sshd (Debian package openssh-server)",
            sshd.is_file().then_some(()),
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("host_ed25519");
        let keygen = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .expect("ssh-keygen");
        assert!(keygen.success());
        fs::write(dir.path().join("authorized_keys"), authorized).expect("write keys");
        // Privilege separation needs its directory.
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                 AuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\n",
                host_key.display(),
                dir.path().join("sshd.pid").display(),
                dir.path().join("authorized_keys").display(),
            ),
        )
        .expect("write sshd_config");
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let server = SshServer {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("sshd did not start on port {port}");
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_remotes_use_the_forwarded_agent() {
    let Some((server, builder)) = setup() else {
        return;
    };
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("id_ed25519");
    let Some(keygen) = support::tool("ssh-keygen") else {
        return;
    };
    let made = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let public = fs::read_to_string(key.with_extension("pub")).expect("public key");
    let Some(ssh) = SshServer::start(&public) else {
        return;
    };
    let repo = server.repo("over-ssh");
    repo.write("Dockerfile", "FROM scratch\nCOPY hello.txt /\n")
        .write("hello.txt", "over ssh\n");
    repo.commit("ssh");
    let url = format!("ssh://root@127.0.0.1:{}{}", ssh.port, repo.bare.display());
    let dockerfile = format!("FROM scratch\nADD {url}#main /s/\n");

    // Without an agent: BuildKit's "no SSH key forwarded", in kiln's words.
    let (failed, _) = build(&builder, &dockerfile, &[]);
    let stderr = failed.fails();
    assert!(
        stderr.contains("needs an SSH agent: give kiln build --ssh default"),
        "{stderr}"
    );

    // With the key served by kiln's agent as `default`: ADD, and the repository as context.
    let agent = format!("default={}", key.display());
    let (built, out) = build(&builder, &dockerfile, &["--ssh", &agent]);
    built.ok();
    assert_eq!(read(out.path(), "s/hello.txt"), "over ssh\n");
    let dest = format!("type=local,dest={}", out.path().join("ctx").display());
    let context = builder
        .kiln(&[
            "build",
            "--ssh",
            &agent,
            "-o",
            &dest,
            &format!("{url}#main"),
        ])
        .run();
    assert!(context.status.success(), "{}", context.stderr_str());
    assert_eq!(
        fs::read_to_string(out.path().join("ctx/hello.txt")).expect("read"),
        "over ssh\n"
    );

    // A key the server does not know is refused, not prompted for.
    let other = keys.path().join("other");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let wrong = format!("default={}", other.display());
    let (denied, _) = build(&builder, &dockerfile, &["--ssh", &wrong]);
    let stderr = denied.fails();
    assert!(stderr.contains("Permission denied"), "{stderr}");
}
