//! `kiln build` against the peer: a current BuildKit (v0.32.2, `buildctl`, started by
//! `../shared/peers/start-peers.sh buildkit`) builds the same Dockerfiles (testdata/build/NAME/,
//! each with its context), and the two images must agree on the container config (the whole
//! `config` object, and `author`), the history (`created_by`, `comment`, `empty_layer`; and the
//! `created` times, as written, where a case's come from `SOURCE_DATE_EPOCH`), the
//! number of layers, and every path of the flattened file tree (type, mode with the special bits,
//! owner, content digest, link target; mtimes where a case asks, see [`Mtimes`]). kiln's
//! `-o type=tar` export must be the tree its layers make. Nothing in the images is normalised:
//! a difference is kiln's.
//!
//! Every Dockerfile is built by both; all differences are collected into one list, printed,
//! and the list must be empty, but for those a case marks as a known kiln divergence
//! ([`Case::known`]), which are listed as known (a marker that matches nothing is a failure, so
//! it goes with the fix; a kiln build failure can be marked the same way). The
//! peer's image comes from `--output type=oci`. Cases FROM busybox start from one image both
//! pull: the peer's build of `busybox-base`, pushed to the loopback registry
//! (`start-peers.sh registry`). Where a case says so, kiln's image and the peer's also go
//! through `docker load` and `docker run` on the peer dockerd (Docker 20.10,
//! `start-peers.sh docker`), and must print what `kiln run` prints.
//!
//! Cases with a git repository (issue 14) have its tree in `testdata/build/NAME/repo/`: the
//! test commits it anew on each run (so BuildKit's checkout cache never answers for an older
//! run) into a repository served by a `git daemon` on loopback, which both builders reach (the
//! peer buildkitd runs with host networking); `@GIT@` in a Dockerfile or a context names it.
//!
//! Needs root, a static busybox (copied into each context at test time), git, buildctl with
//! its buildkitd, the registry and dockerd; skips with a notice without them (fails under
//! `CI=true`).

use crate::add_git::{COMMIT_TIME, GitServer, git, git_with};
use crate::support::{self, PeerBuildctl, PeerDocker, kiln};
use kiln::oci::Digest;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One Dockerfile of testdata/build.
struct Case {
    /// The directory under testdata/build, and the image names: `kiln-peer-NAME` (the peer's
    /// build) and `kiln-peercmp-NAME` (kiln's).
    name: &'static str,
    build_args: &'static [&'static str],
    /// What `--build-arg BASE=` names.
    base: Option<Base>,
    /// Modes set on context paths after the copy from testdata (git keeps only the x bit).
    modes: &'static [(&'static str, u32)],
    /// Owners (uid, gid) set on context paths after the copy: a `stdin` case's tar carries
    /// them (a local directory's owners never reach an image).
    owners: &'static [(&'static str, u32, u32)],
    /// Run the image with `docker run` (the peer's image and kiln's, loaded) and `kiln run`
    /// and compare what they print.
    run: bool,
    /// Build arguments given a fresh value on each run of the test (a daemon's cache mounts
    /// outlive its builds, so a case that reads one uses a new id each time).
    fresh_args: &'static [&'static str],
    /// `--secret id=ID,src=FILE` for both builders: (id, content).
    secrets: &'static [(&'static str, &'static str)],
    /// `--ssh default=SOCKET` for both builders, the socket of an `ssh-agent` the test starts.
    ssh: bool,
    /// Serve the case's `served/` directory over HTTP on loopback for both builders; the
    /// Dockerfile names the server `@HTTP@` (`host:port`). See [`HttpServer`].
    http: bool,
    /// `--build-context NAME=VALUE` for both: a VALUE without `://` (or `@GIT@`) is a directory
    /// of the case's context (buildctl: `--local NAME=DIR --opt context:NAME=local:NAME`);
    /// `@REGISTRY@` is the loopback registry, `@GIT@` the git server.
    contexts: &'static [(&'static str, &'static str)],
    /// The context directory as one tar: kiln reads it on stdin (`kiln build -`); the peer
    /// downloads it from a loopback HTTP server (`--opt context=http://...`), which is what
    /// buildx makes of a stdin tar (its upload provider serves it to BuildKit as an http
    /// context). See [`StdinTar`].
    stdin: bool,
    /// KNOWN kiln divergences from BuildKit, not fixed yet: a difference of this case that
    /// contains one's text is listed as known instead of failing the test, and one that matches
    /// nothing is a failure, so each marker is removed with its fix.
    known: &'static [Known],
    /// The case's `repo/` is a git repository at `@GIT@/NAME.git`: branch `main` and an
    /// annotated tag `v1`.
    git: bool,
    /// The build context: the case directory, or (`Some(SUFFIX)`) its repository,
    /// `@GIT@/NAME.git` followed by `SUFFIX` (`#main:app`).
    git_context: Option<&'static str>,
    /// Which file times are compared.
    mtimes: Mtimes,
    /// Compare the image's `created` and every history entry's `created`, exactly (a case
    /// whose times come from `SOURCE_DATE_EPOCH`).
    times: bool,
    /// The committer date of the case's repository commit (`GIT_COMMITTER_DATE`), when not
    /// the tests' fixed one.
    committer_date: Option<&'static str>,
}

/// Which file times a case compares.
#[derive(Clone, Copy)]
enum Mtimes {
    /// None.
    Ignored,
    /// Every path's, exactly (both builders give the same times: a git context's commit time).
    Exact,
    /// These paths', exactly (where BuildKit sets a time: a download's `Last-Modified`).
    Paths(&'static [&'static str]),
    /// Paths below these directories have the time of each builder's own checkout: within the
    /// time its build ran, not the commit's (BuildKit's default for a git source).
    Checkout(&'static [&'static str]),
}

/// A known kiln divergence (see [`Case::known`]).
struct Known {
    /// What it is: the issue item being fixed, or the BuildKit behaviour kiln lacks.
    item: &'static str,
    /// Text every difference it covers contains (a kiln build failure is the difference
    /// `kiln build failed ...` with kiln's whole output).
    text: &'static str,
}

/// BuildKit v0.32 keeps a layer (an empty tar) for a COPY, ADD, RUN or WORKDIR that changes
/// nothing, and its history entry is not `empty_layer` (the diff of every file op and exec is
/// exported, exporter/containerimage/writer.go `normalizeLayersAndHistory` only fills in
/// missing history); kiln drops the empty diff and marks the entry empty. (The issue-12 notes on
/// item 7 say the same.)
const EMPTY_LAYER: Known = empty_layers(": the peer has a layer, kiln marks it empty_layer");

/// [`EMPTY_LAYER`]'s consequence on the layer count: `text` is `layers: peer N, kiln M`.
const fn empty_layers(text: &'static str) -> Known {
    Known {
        item: "an unchanged step keeps its empty layer in BuildKit (issue 12, item 7 note)",
        text,
    }
}

/// The image a case's `FROM ${BASE}` names.
enum Base {
    /// This earlier case's image as each builder made it: kiln's from its store, the peer's
    /// pushed to the loopback registry.
    Own(&'static str),
    /// The peer's image of this earlier case, pushed to the loopback registry, for both builders
    /// (kiln pulls it): both start from the same bytes.
    Shared(&'static str),
}

/// The defaults the cases below start from.
const CASE: Case = Case {
    name: "",
    build_args: &[],
    base: None,
    modes: &[],
    owners: &[],
    run: false,
    fresh_args: &[],
    secrets: &[],
    ssh: false,
    http: false,
    contexts: &[],
    stdin: false,
    known: &[],
    git: false,
    git_context: None,
    mtimes: Mtimes::Ignored,
    times: false,
    committer_date: None,
};

/// The image the named-image cases give a name to: the peer's busybox base in the registry.
const NAMED_BASE: &str = "docker-image://@REGISTRY@/kiln-peer/busybox-base:latest";

/// The secret the `mount-secret` case reads; it must appear in neither image.
const SECRET_TOKEN: &str = "kiln-peer-secret-3f9a1c";

/// The cases FROM busybox (the issue-12 ones) start from the peer's `busybox-base`.
const BUSYBOX: Option<Base> = Some(Base::Shared("busybox-base"));

const CASES: &[Case] = &[
    Case {
        name: "config",
        run: true,
        ..CASE
    },
    Case {
        name: "entrypoint",
        run: true,
        ..CASE
    },
    Case {
        name: "run",
        known: &[EMPTY_LAYER, empty_layers("layers: peer 9, kiln 7")],
        ..CASE
    },
    Case {
        name: "heredoc",
        run: true,
        ..CASE
    },
    Case {
        name: "args",
        build_args: &["FLAVOUR=custom", "RELEASE=7"],
        run: true,
        ..CASE
    },
    Case {
        name: "user",
        run: true,
        known: &[EMPTY_LAYER, empty_layers("layers: peer 16, kiln 15")],
        ..CASE
    },
    Case {
        name: "copy",
        ..CASE
    },
    // kiln's planner (src/frontend/context/sources.rs `select_source`) rejects a context wildcard that
    // matches nothing; BuildKit copies nothing for it (dockerfile2llb dispatchCopy:
    // `AllowEmptyWildcard: true`).
    Case {
        name: "copy-empty-wildcard",
        known: &[EMPTY_LAYER, empty_layers("layers: peer 4, kiln 2")],
        ..CASE
    },
    Case {
        name: "copy-from",
        run: true,
        ..CASE
    },
    Case {
        name: "add",
        ..CASE
    },
    Case {
        name: "volume-onbuild",
        run: true,
        ..CASE
    },
    Case {
        name: "onbuild-child",
        base: Some(Base::Own("volume-onbuild")),
        ..CASE
    },
    Case {
        name: "busybox-base",
        ..CASE
    },
    // Issue 12, one case per item (item 12, SOURCE_DATE_EPOCH=not-a-timestamp, is a build
    // error: this test compares images only).
    Case {
        name: "workdir-trailing-slash",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "entrypoint-parent-cmd",
        base: BUSYBOX,
        run: true,
        ..CASE
    },
    Case {
        name: "copy-wildcard-file",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "workdir-unknown-user",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "copy-chmod-arg",
        base: BUSYBOX,
        modes: &[("f", 0o600)],
        ..CASE
    },
    Case {
        name: "unused-stage",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "identical-layers",
        base: BUSYBOX,
        known: &[EMPTY_LAYER, empty_layers("layers: peer 6, kiln 5")],
        ..CASE
    },
    Case {
        name: "copy-symlinked-dir",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "heredoc-copy",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "run-groups",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "chmod-dir",
        base: BUSYBOX,
        modes: &[("dir", 0o750), ("dir/a", 0o600), ("dir/sub", 0o700)],
        ..CASE
    },
    // Issue 13: RUN --mount, secrets, ssh, heredoc scripts.
    Case {
        name: "mount-bind",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "mount-cache",
        base: BUSYBOX,
        fresh_args: &["CACHE_ID"],
        ..CASE
    },
    Case {
        name: "mount-tmpfs",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "mount-secret",
        base: BUSYBOX,
        secrets: &[("token", SECRET_TOKEN)],
        ..CASE
    },
    Case {
        name: "mount-ssh",
        base: BUSYBOX,
        ssh: true,
        ..CASE
    },
    Case {
        name: "mount-script",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "mount-stubs",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "mount-from",
        base: BUSYBOX,
        ..CASE
    },
    // Issue 14: remote sources and contexts.
    Case {
        name: "add-url",
        base: BUSYBOX,
        http: true,
        mtimes: Mtimes::Paths(&[
            "/downloads/hello.txt",
            "/named.txt",
            "/notunpacked/data.tar",
            "/redirected/hello.txt",
            "/linked/hello.txt",
            "/root-url/__unnamed__",
        ]),
        ..CASE
    },
    Case {
        name: "copy-parents",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "copy-link",
        base: BUSYBOX,
        ..CASE
    },
    Case {
        name: "build-context-dir",
        base: BUSYBOX,
        contexts: &[("lib", "lib")],
        ..CASE
    },
    Case {
        name: "build-context-image",
        contexts: &[("mybase", NAMED_BASE), ("tools", NAMED_BASE)],
        ..CASE
    },
    Case {
        name: "stdin-context",
        base: BUSYBOX,
        owners: &[("sub", 42, 43), ("sub/below.txt", 1234, 4321)],
        stdin: true,
        ..CASE
    },
    Case {
        name: "build-context-layout",
        contexts: &[("lay", "oci-layout:layout")],
        ..CASE
    },
    // Issue 14: git repositories.
    Case {
        name: "add-git-branch",
        modes: &[("repo/bin/tool", 0o755)],
        git: true,
        mtimes: Mtimes::Checkout(&["/src", "/lib"]),
        ..CASE
    },
    Case {
        name: "add-git-tag-subdir",
        git: true,
        mtimes: Mtimes::Checkout(&["/sub", "/deeper"]),
        ..CASE
    },
    Case {
        name: "git-context",
        git: true,
        git_context: Some("#main:app"),
        mtimes: Mtimes::Checkout(&["/"]),
        ..CASE
    },
    Case {
        name: "git-context-epoch",
        git: true,
        git_context: Some("#main"),
        build_args: &["SOURCE_DATE_EPOCH=1612325106"],
        mtimes: Mtimes::Exact,
        ..CASE
    },
    Case {
        name: "build-context-git",
        git: true,
        contexts: &[("src", "@GIT@/build-context-git.git#main")],
        mtimes: Mtimes::Checkout(&["/lib", "/README"]),
        ..CASE
    },
    // Issue 14: SOURCE_DATE_EPOCH from a source-only stage's URL or git repository.
    Case {
        name: "epoch-stage-url",
        base: BUSYBOX,
        http: true,
        times: true,
        ..CASE
    },
    Case {
        name: "epoch-stage-git",
        base: BUSYBOX,
        git: true,
        times: true,
        committer_date: Some("@1600000000 +0300"),
        ..CASE
    },
];

/// The peers and what every build needs.
struct Peers {
    buildctl: PeerBuildctl,
    docker: PeerDocker,
    /// The loopback registry, `host:port`.
    registry: String,
    busybox: PathBuf,
    /// kiln's store, shared by the cases (a case's base is in it).
    root: PathBuf,
    /// Unique to this run of the test: the value of each case's `fresh_args`.
    run_id: String,
    /// Serves the cases' repositories.
    git: GitServer,
}

impl Peers {
    /// `@GIT@` (the git server) in `text` replaced.
    fn with_git(&self, text: &str) -> String {
        text.replace("@GIT@", self.git.url("").trim_end_matches("/.git"))
    }
}

#[test]
fn kiln_builds_what_the_peer_buildkit_builds() {
    let (Some(()), Some(busybox), Some(buildctl), Some(registry), Some(docker), Some(git)) = (
        support::root(),
        support::busybox(),
        support::peer_buildctl(),
        support::peer_registry(),
        support::peer_docker(),
        GitServer::start(),
    ) else {
        return;
    };
    let started = Instant::now();
    let root = tempfile::tempdir().expect("temp dir");
    let peers = Peers {
        buildctl,
        docker,
        registry,
        busybox,
        root: root.path().to_path_buf(),
        run_id: format!(
            "run{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ),
        git,
    };
    // `KILN_PEER_CASES=a,b` compares only those cases (they must not need another's image).
    let only = std::env::var("KILN_PEER_CASES").ok();
    let selected: Vec<&Case> = CASES
        .iter()
        .filter(|case| {
            only.as_deref()
                .is_none_or(|names| names.split(',').any(|n| n == case.name))
        })
        .collect();
    let mut differences = Vec::new();
    let mut known = Vec::new();
    let (mut compared, mut known_failures) = (0, 0);
    for case in selected.iter().copied() {
        let case_started = Instant::now();
        let mut found = Vec::new();
        let outcome = check_case(&peers, case, &mut found);
        eprintln!(
            "{}: {:?} in {:.1} s",
            case.name,
            outcome,
            case_started.elapsed().as_secs_f64()
        );
        let mut unused: Vec<&Known> = case.known.iter().collect();
        let mut unknown = 0;
        for difference in found {
            match case.known.iter().find(|k| difference.contains(k.text)) {
                Some(marker) => {
                    unused.retain(|k| !std::ptr::eq(*k, marker));
                    known.push(format!(
                        "{}: {difference} (KNOWN: {})",
                        case.name, marker.item
                    ));
                }
                None => {
                    unknown += 1;
                    differences.push(format!("{}: {difference}", case.name));
                }
            }
        }
        for marker in unused {
            differences.push(format!(
                "{}: no difference contains {:?} any more: remove that known marker ({})",
                case.name, marker.text, marker.item
            ));
        }
        match outcome {
            Outcome::Compared => compared += 1,
            // A build that failed in a known way.
            Outcome::Failed if unknown == 0 => known_failures += 1,
            Outcome::Failed => {}
        }
    }
    if !known.is_empty() {
        eprintln!(
            "{} known differences (each marked on its case):\n  {}",
            known.len(),
            known.join("\n  ")
        );
    }
    if !differences.is_empty() {
        eprintln!(
            "{} differences between kiln and the peer BuildKit:\n  {}",
            differences.len(),
            differences.join("\n  ")
        );
    }
    eprintln!(
        "{} cases in {:.1} s",
        selected.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(differences.is_empty(), "{differences:#?}");
    assert_eq!(
        compared + known_failures,
        selected.len(),
        "every Dockerfile was compared or failed as known"
    );
    assert!(
        only.is_some() || compared >= 10,
        "at least ten Dockerfiles are compared"
    );
}

/// How a case ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Both built and the images were compared (differences, if any, were noted).
    Compared,
    /// A build failed or an image could not be read (noted).
    Failed,
}

/// Builds `case` with both and notes every difference in `found` (the caller sorts out the ones
/// its [`Case::known`] markers name).
fn check_case(peers: &Peers, case: &Case, found: &mut Vec<String>) -> Outcome {
    let work = tempfile::tempdir().expect("temp dir");
    let context = work.path().join("context");
    prepare_context(case, &peers.busybox, &context);
    if case.git {
        publish_repository(peers, case, &context);
    }
    let http = case.http.then(|| HttpServer::start(context.join("served")));
    // `from=` cannot be expanded: a case names the registry's images through @REGISTRY@, the
    // git server through @GIT@ and its HTTP server through @HTTP@.
    let dockerfile = context.join("Dockerfile");
    if let Ok(text) = fs::read_to_string(&dockerfile) {
        let mut text = peers.with_git(&text.replace("@REGISTRY@", &peers.registry));
        if let Some(server) = &http {
            text = text.replace("@HTTP@", &server.host);
        }
        fs::write(&dockerfile, text).expect("write");
    }
    for (id, value) in case.secrets {
        let dir = work.path().join("secrets");
        fs::create_dir_all(&dir).expect("mkdir secrets");
        fs::write(dir.join(id), value).expect("write secret");
    }
    let _agent = if case.ssh {
        match SshAgent::start(&work.path().join("agent.sock")) {
            Ok(agent) => Some(agent),
            Err(err) => {
                found.push(err);
                return Outcome::Failed;
            }
        }
    } else {
        None
    };
    let stdin = case
        .stdin
        .then(|| StdinTar::serve(&context, &work.path().join("stdin")));
    let peer_tar = work.path().join("peer.tar");
    let peer_docker_tar = work.path().join("peer-docker.tar");
    let kiln_tar = work.path().join("kiln.tar");
    let kiln_export = work.path().join("kiln-export.tar");
    let peer_docker = case.run.then_some(peer_docker_tar.as_path());
    let peer_started = now();
    if let Err(err) = peer_build(
        peers,
        case,
        &context,
        stdin.as_ref(),
        &peer_tar,
        peer_docker,
    ) {
        found.push(err);
        return Outcome::Failed;
    }
    let (peer_ended, kiln_started) = (now(), now());
    if let Err(err) = kiln_build(
        peers,
        case,
        &context,
        stdin.as_ref(),
        &kiln_tar,
        &kiln_export,
    ) {
        found.push(err);
        return Outcome::Failed;
    }
    let kiln_ended = now();
    let (peer, kiln) = match (read_image(&peer_tar), read_image(&kiln_tar)) {
        (Ok(peer), Ok(kiln)) => (peer, kiln),
        (peer, kiln) => {
            found.extend([peer.err(), kiln.err()].into_iter().flatten());
            return Outcome::Failed;
        }
    };
    found.extend(compare_configs(&peer.config, &kiln.config));
    found.extend(compare_history(&peer, &kiln));
    if case.times {
        found.extend(compare_times(&peer.config, &kiln.config));
    }
    eprintln!(
        "{}: {} paths, {} history entries, {} layers compared",
        case.name,
        peer.tree.len(),
        history(&peer.config).len(),
        peer.layers.len()
    );
    let exact = matches!(case.mtimes, Mtimes::Exact);
    found.extend(compare_trees("peer", &peer.tree, "kiln", &kiln.tree, exact));
    if let Mtimes::Paths(paths) = case.mtimes {
        for path in paths {
            match (peer.tree.get(*path), kiln.tree.get(*path)) {
                (Some(p), Some(k)) if p.mtime != k.mtime => {
                    found.push(format!("{path}: mtime: peer {}, kiln {}", p.mtime, k.mtime))
                }
                (Some(_), Some(_)) => {}
                _ => found.push(format!(
                    "{path}: not in both images, so no mtime to compare"
                )),
            }
        }
    }
    if let Mtimes::Checkout(dirs) = case.mtimes {
        for (who, tree, window) in [
            ("peer", &peer.tree, (peer_started, peer_ended)),
            ("kiln", &kiln.tree, (kiln_started, kiln_ended)),
        ] {
            found.extend(checkout_times(who, tree, dirs, window));
        }
    }
    // A secret's bytes reach no layer and no config of either image.
    for (id, value) in case.secrets {
        for (who, tar) in [
            ("peer", &peer_tar),
            ("kiln", &kiln_tar),
            ("kiln export", &kiln_export),
        ] {
            if contains_bytes(tar, value.as_bytes()) {
                found.push(format!("{who}'s image holds the bytes of secret {id}"));
            }
        }
    }
    // kiln's flattened export must be the tree its layers make.
    match fs::read(&kiln_export)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            let mut tree = Tree::new();
            apply_layer(&mut tree, &b)?;
            Ok(tree)
        }) {
        Ok(exported) => found.extend(compare_trees(
            "kiln layers",
            &kiln.tree,
            "kiln export",
            &exported,
            false,
        )),
        Err(err) => found.push(format!("cannot read kiln's export: {err}")),
    }
    if case.run {
        found.extend(compare_runs(peers, case, &peer_docker_tar, &kiln_tar));
    }
    Outcome::Compared
}

/// Whether the file at `path`, or any gzip member of a tar inside it, holds `needle`.
fn contains_bytes(path: &Path, needle: &[u8]) -> bool {
    let bytes = fs::read(path).unwrap_or_default();
    let found = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    if found(&bytes) {
        return true;
    }
    // Layers inside an archive are compressed: look inside each entry too.
    let mut archive = tar::Archive::new(bytes.as_slice());
    let Ok(entries) = archive.entries() else {
        return false;
    };
    for entry in entries.flatten() {
        let mut data = Vec::new();
        let mut entry = entry;
        if entry.read_to_end(&mut data).is_err() {
            continue;
        }
        let mut plain = Vec::new();
        let unpacked = flate2::read::GzDecoder::new(data.as_slice())
            .read_to_end(&mut plain)
            .is_ok();
        if found(&data) || (unpacked && found(&plain)) {
            return true;
        }
    }
    false
}

/// An `ssh-agent` serving one fresh ed25519 key on a socket, killed on drop.
struct SshAgent(std::process::Child);

impl SshAgent {
    fn start(socket: &Path) -> Result<SshAgent, String> {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        let key = dir.join("id_ed25519");
        run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
            "ssh-keygen",
        )?;
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start ssh-agent: {e}"))?;
        let agent = SshAgent(child);
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        run(
            Command::new("ssh-add")
                .arg(&key)
                .env("SSH_AUTH_SOCK", socket),
            "ssh-add",
        )?;
        Ok(agent)
    }
}

impl Drop for SshAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The case's context in `context`: testdata/build/NAME copied (symlinks as symlinks), its
/// `modes` set, the busybox binary, and for `add` the archives it adds.
fn prepare_context(case: &Case, busybox: &Path, context: &Path) {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/build")
        .join(case.name);
    copy_tree(&source, context);
    for (path, mode) in case.modes {
        fs::set_permissions(context.join(path), fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    for (path, uid, gid) in case.owners {
        std::os::unix::fs::lchown(context.join(path), Some(*uid), Some(*gid)).expect("chown");
    }
    fs::copy(busybox, context.join("busybox")).expect("copy busybox");
    if case.name == "build-context-layout" {
        write_busybox_layout(busybox, &context.join("layout"));
    }
    if case.name == "add-url" {
        fs::write(context.join("served/data.tar"), tree_archive()).expect("write data.tar");
    }
    if case.name == "add" {
        let tree = tree_archive();
        fs::write(context.join("tree.tar"), &tree).expect("write tree.tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &tree).expect("gzip");
        fs::write(context.join("tree.tar.gz"), gz.finish().expect("gzip")).expect("write");
        fs::write(context.join("nested.tar"), nested_archive(&tree)).expect("write nested.tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, b"compressed, not an archive\n").expect("gzip");
        fs::write(context.join("single.gz"), gz.finish().expect("gzip")).expect("write");
    }
}

/// An OCI layout at `layout` holding one image: busybox installed on scratch, built by kiln
/// on a store of its own (`-o type=oci`, unpacked).
fn write_busybox_layout(busybox: &Path, layout: &Path) {
    let work = tempfile::tempdir().expect("temp dir");
    let context = work.path().join("context");
    fs::create_dir_all(&context).expect("mkdir");
    fs::copy(busybox, context.join("busybox")).expect("copy busybox");
    fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .expect("write Dockerfile");
    let archive = work.path().join("layout.tar");
    kiln()
        .root(work.path().join("root"))
        .args(["build", "--progress", "plain", "-o"])
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(&context)
        .run()
        .success();
    tar::Archive::new(fs::File::open(&archive).expect("open the layout tar"))
        .unpack(layout)
        .expect("unpack the layout");
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create directory");
    let mode = fs::metadata(from).expect("stat").permissions();
    fs::set_permissions(to, mode).expect("chmod");
    for entry in fs::read_dir(from).expect("read testdata") {
        let entry = entry.expect("entry");
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_symlink() {
            let target = fs::read_link(&source).expect("readlink");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else if kind.is_dir() {
            copy_tree(&source, &dest);
        } else {
            fs::copy(&source, &dest).expect("copy file");
        }
    }
}

/// The archive `add` unpacks: owners, special modes, a symlink, a hard link, a fifo, an
/// empty directory and a `./`-prefixed name.
fn tree_archive() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, owner: (u64, u64), data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner.0);
        header.set_gid(owner.1);
        header.set_mtime(1_600_000_000);
        header.set_size(if kind == tar::EntryType::Regular {
            data.len() as u64
        } else {
            0
        });
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            header
                .set_link_name(std::str::from_utf8(data).expect("utf-8 target"))
                .expect("link name");
            builder
                .append_data(&mut header, path, std::io::empty())
                .expect("append");
        } else {
            builder
                .append_data(&mut header, path, data)
                .expect("append");
        }
    };
    use tar::EntryType::{Directory, Fifo, Link, Regular, Symlink};
    add("tree/", Directory, 0o755, (0, 0), b"");
    add("tree/bin/", Directory, 0o750, (1001, 1002), b"");
    add("tree/bin/tool", Regular, 0o4755, (0, 0), b"tool\n");
    add("tree/data.txt", Regular, 0o640, (1001, 1002), b"data\n");
    add("tree/link", Symlink, 0o777, (0, 0), b"data.txt");
    add("tree/hard", Link, 0o640, (1001, 1002), b"tree/data.txt");
    add("tree/fifo", Fifo, 0o600, (0, 0), b"");
    add("tree/empty/", Directory, 0o1777, (0, 0), b"");
    add("./dot-prefixed.txt", Regular, 0o644, (5, 5), b"dot\n");
    builder.into_inner().expect("finish tar")
}

/// An archive holding another one: ADD unpacks only the outer.
fn nested_archive(inner: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_mtime(1_600_000_000);
    header.set_size(inner.len() as u64);
    builder
        .append_data(&mut header, "inner.tar", inner)
        .expect("append");
    builder.into_inner().expect("finish tar")
}

/// The registry name of the peer's build of case `name` (pushed when another case is FROM it).
fn pushed(peers: &Peers, name: &str) -> String {
    format!("{}/kiln-peer/{name}:latest", peers.registry)
}

/// The peer's build: `buildctl build` with the Dockerfile front end (v0.32's built-in one, no
/// `# syntax=`), exported as an OCI archive to `oci`; also as a docker archive to `docker`
/// when given (for `docker load`), and pushed to the registry when another case is FROM it.
fn peer_build(
    peers: &Peers,
    case: &Case,
    context: &Path,
    stdin: Option<&StdinTar>,
    oci: &Path,
    docker: Option<&Path>,
) -> Result<(), String> {
    let mut command = peers.buildctl.command();
    command.args(["build", "--progress=plain", "--frontend", "dockerfile.v0"]);
    match (case.git_context, stdin) {
        // The repository is the context, and its Dockerfile comes from it.
        (Some(suffix), _) => {
            command
                .arg("--opt")
                .arg(format!("context={}{suffix}", peers.git.url(case.name)));
        }
        // The Dockerfile comes from the downloaded context: no `--local dockerfile`.
        (None, Some(tar)) => {
            command.args(["--opt", &format!("context={}", tar.url)]);
        }
        (None, None) => {
            command
                .arg("--local")
                .arg(format!("context={}", context.display()))
                .arg("--local")
                .arg(format!("dockerfile={}", context.display()));
        }
    }
    for arg in build_args(peers, case, None) {
        command.args(["--opt", &format!("build-arg:{arg}")]);
    }
    for flag in session_flags(case, context) {
        command.arg(flag);
    }
    for (name, value) in named_contexts(peers, case, context) {
        if let Some(layout) = value.strip_prefix("oci-layout://") {
            // buildctl names the layout a session store; the context names it by that name
            // and a digest (buildx resolves a tag on the client).
            let (dir, digest) = layout.split_once('@').unwrap_or((layout, ""));
            command.args(["--oci-layout", &format!("{name}={dir}")]);
            command.args([
                "--opt",
                &format!("context:{name}=oci-layout://{name}@{digest}"),
            ]);
        } else if value.contains("://") {
            command.args(["--opt", &format!("context:{name}={value}")]);
        } else {
            command.args(["--local", &format!("{name}={value}")]);
            command.args(["--opt", &format!("context:{name}=local:{name}")]);
        }
    }
    command
        .arg("--output")
        .arg(format!("type=oci,dest={}", oci.display()));
    if let Some(docker) = docker {
        command.arg("--output").arg(format!(
            "type=docker,name=kiln-peer-{},dest={}",
            case.name,
            docker.display()
        ));
    }
    let is_base = CASES
        .iter()
        .any(|c| matches!(c.base, Some(Base::Own(name) | Base::Shared(name)) if name == case.name));
    if is_base {
        command.arg("--output").arg(format!(
            "type=image,name={},push=true,registry.insecure=true",
            pushed(peers, case.name)
        ));
    }
    run(&mut command, "the peer's buildctl build").map(drop)
}

/// `kiln build` with a docker archive and a flattened tar as outputs.
fn kiln_build(
    peers: &Peers,
    case: &Case,
    context: &Path,
    stdin: Option<&StdinTar>,
    save: &Path,
    export: &Path,
) -> Result<(), String> {
    let mut command = kiln().root(&peers.root).args([
        "build",
        "--progress",
        "plain",
        "-t",
        &format!("kiln-peercmp-{}", case.name),
        "-o",
        &format!("type=docker,dest={}", save.display()),
        "-o",
        &format!("type=tar,dest={}", export.display()),
    ]);
    for arg in build_args(peers, case, Some("kiln-peercmp-")) {
        command = command.args(["--build-arg", &arg]);
    }
    command = command.args(session_flags(case, context));
    for (name, value) in named_contexts(peers, case, context) {
        command = command.args(["--build-context", &format!("{name}={value}")]);
    }
    let command = match (case.git_context, stdin) {
        (Some(suffix), _) => command.arg(format!("{}{suffix}", peers.git.url(case.name))),
        (None, Some(tar)) => command.arg("-").stdin(tar.bytes.clone()),
        (None, None) => command.arg(context),
    };
    checked(command.run().into(), "kiln build").map(drop)
}

/// A case's named contexts, `(NAME, VALUE)`: a directory as an absolute path, `@REGISTRY@`
/// and `@GIT@` written out, `oci-layout:DIR` as `oci-layout://ABSOLUTE-DIR@DIGEST` (the digest of the
/// layout's first image).
fn named_contexts(peers: &Peers, case: &Case, context: &Path) -> Vec<(String, String)> {
    case.contexts
        .iter()
        .map(|(name, value)| {
            let value = if let Some(dir) = value.strip_prefix("oci-layout:") {
                let dir = context.join(dir);
                let index: Value = serde_json::from_slice(
                    &fs::read(dir.join("index.json")).expect("the layout's index.json"),
                )
                .expect("index.json is JSON");
                let digest = index["manifests"][0]["digest"].as_str().unwrap_or_default();
                format!("oci-layout://{}@{digest}", dir.display())
            } else if value.contains("://") || value.starts_with("@GIT@") {
                peers.with_git(&value.replace("@REGISTRY@", &peers.registry))
            } else {
                context.join(value).display().to_string()
            };
            (name.to_string(), value)
        })
        .collect()
}

/// A `stdin` case's context as one tar, for both builders: its bytes (kiln's standard input)
/// and the URL a loopback [`HttpServer`] serves them at (the peer's context).
struct StdinTar {
    bytes: Vec<u8>,
    url: String,
}

impl StdinTar {
    /// Tars `context` (uncompressed, symlinks as symlinks, owners and modes as on disk, as a
    /// user pipes one into `kiln build -`) into `dir/context.tar` and serves `dir`.
    fn serve(context: &Path, dir: &Path) -> StdinTar {
        let mut builder = tar::Builder::new(Vec::new());
        builder.follow_symlinks(false);
        builder
            .append_dir_all(".", context)
            .expect("tar the context");
        let bytes = builder.into_inner().expect("finish the tar");
        fs::create_dir_all(dir).expect("mkdir");
        fs::write(dir.join("context.tar"), &bytes).expect("write the tar");
        let server = HttpServer::start(dir.to_path_buf());
        StdinTar {
            bytes,
            url: format!("http://{}/files/context.tar", server.host),
        }
    }
}

/// A loopback HTTP server for both builders (buildkitd runs with the host's network), the
/// tests' own ([`support::http::Server`]): `/files/NAME` serves `served/NAME` with a fixed
/// `Last-Modified` and an `ETag`; `/redirect/NAME` redirects there; `/` serves a short text.
/// It serves as long as the test process lives.
struct HttpServer {
    /// `127.0.0.1:PORT`.
    host: String,
}

/// What every served file claims as its modification time (BuildKit and kiln give the
/// downloaded file this mtime).
const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

impl HttpServer {
    fn start(root: PathBuf) -> HttpServer {
        use crate::support::http::{Resource, Server};
        let server = Server::start();
        let dated = |body: Vec<u8>, etag: Option<String>| Resource {
            body,
            etag,
            last_modified: Some(LAST_MODIFIED.to_string()),
            ..Resource::default()
        };
        for entry in fs::read_dir(&root).expect("read the served directory") {
            let entry = entry.expect("read the served directory");
            let name = entry.file_name().to_string_lossy().into_owned();
            let body = fs::read(entry.path()).expect("read a served file");
            let etag = Digest::of(&body).hex()[..16].to_string();
            server.set(&format!("/files/{name}"), dated(body, Some(etag)));
            server.set(
                &format!("/redirect/{name}"),
                Resource {
                    redirect: Some(format!("/files/{name}")),
                    ..Resource::default()
                },
            );
        }
        server.set("/", dated(b"the root\n".to_vec(), None));
        let host = server.url("").trim_start_matches("http://").to_string();
        // Its accept loop serves for the rest of the test process (dropping it stops nothing).
        HttpServer { host }
    }
}

/// The case's `--build-arg`s, `BASE` naming its base image: for kiln (`own_prefix` given) its
/// own build of an [`Base::Own`] case, by that prefix; else the peer's, from the registry.
fn build_args(peers: &Peers, case: &Case, own_prefix: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = case.build_args.iter().map(|a| a.to_string()).collect();
    args.extend(
        case.fresh_args
            .iter()
            .map(|name| format!("{name}={}", peers.run_id)),
    );
    match (&case.base, own_prefix) {
        (Some(Base::Own(name)), Some(prefix)) => args.push(format!("BASE={prefix}{name}")),
        (Some(Base::Own(name) | Base::Shared(name)), _) => {
            args.push(format!("BASE={}", pushed(peers, name)));
        }
        (None, _) => {}
    }
    args
}

/// The `--secret` and `--ssh` flags of a case (the same spelling for buildctl and kiln): secret
/// files and the agent socket live beside the context (`../secrets/ID`, `../agent.sock`), never
/// in it.
fn session_flags(case: &Case, context: &Path) -> Vec<String> {
    let beside = context.parent().unwrap_or(context);
    let mut flags = Vec::new();
    for (id, _) in case.secrets {
        flags.push("--secret".to_string());
        flags.push(format!(
            "id={id},src={}",
            beside.join("secrets").join(id).display()
        ));
    }
    if case.ssh {
        flags.push("--ssh".to_string());
        flags.push(format!("default={}", beside.join("agent.sock").display()));
    }
    flags
}

/// Runs `command`; its stdout, or an error naming `what` with everything it printed.
fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot start {what}: {e}"))?;
    checked(out, what)
}

/// `out`'s stdout if it succeeded, or an error naming `what` with everything it printed.
fn checked(out: std::process::Output, what: &str) -> Result<String, String> {
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What a flattened file-tree path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    /// A regular file (or a hard link, as the file it links to): its content digest, and the
    /// content itself when it is short text (for readable differences).
    File(String),
    Symlink(String),
    Fifo,
    Device(String),
    /// A directory no layer has an entry for: only its children are there.
    ImplicitDir,
}

/// One path of a flattened tree.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    /// The permission and special bits (0o7777).
    mode: u32,
    uid: u64,
    gid: u64,
    /// The modification time (seconds), compared only where a case asks ([`Mtimes`]).
    mtime: u64,
}

impl Node {
    /// The same node, with or without the same time.
    fn same(&self, other: &Node, with_mtime: bool) -> bool {
        (&self.kind, self.mode, self.uid, self.gid)
            == (&other.kind, other.mode, other.uid, other.gid)
            && (!with_mtime || self.mtime == other.mtime)
    }
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        (&self.kind, self.mode, self.uid, self.gid)
            == (&other.kind, other.mode, other.uid, other.gid)
    }
}

impl Eq for Node {}

/// Absolute path (`/a/b`) → node; the root itself is left out.
pub(crate) type Tree = BTreeMap<String, Node>;

/// An image read from an archive.
pub(crate) struct Image {
    pub(crate) config: Value,
    pub(crate) tree: Tree,
    /// The paths each layer has entries for, base first.
    pub(crate) layers: Vec<Vec<String>>,
}

/// Reads an image archive: a `docker save` one (kiln's: `manifest.json`) or an OCI image
/// layout (the peer's `type=oci`: `index.json`, no `manifest.json`). The first image's config
/// and its layers flattened.
fn read_image(path: &Path) -> Result<Image, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let files = archive_files(&bytes)?;
    let json = |name: &str| -> Result<Value, String> {
        let data = files
            .get(name)
            .ok_or_else(|| format!("{}: no {name}", path.display()))?;
        serde_json::from_slice(data).map_err(|e| format!("{}: bad {name}: {e}", path.display()))
    };
    let (config, layer_names) = if files.contains_key("manifest.json") {
        let manifest = json("manifest.json")?;
        let entry = manifest.get(0).ok_or("manifest.json lists no image")?;
        let config_name = entry
            .get("Config")
            .and_then(Value::as_str)
            .ok_or("manifest.json has no Config")?;
        let layers = entry.get("Layers").and_then(Value::as_array);
        let names = layers.ok_or("manifest.json has no Layers")?.iter();
        let names: Option<Vec<String>> = names.map(|l| Some(l.as_str()?.to_string())).collect();
        (
            json(config_name)?,
            names.ok_or("a layer name is not a string")?,
        )
    } else {
        let manifest = oci_manifest(&json, json("index.json")?)?;
        let blob = |descriptor: &Value| {
            descriptor
                .get("digest")
                .and_then(Value::as_str)
                .map(|d| format!("blobs/{}", d.replacen(':', "/", 1)))
                .ok_or_else(|| format!("a descriptor without a digest: {descriptor}"))
        };
        let config = json(&blob(manifest.get("config").ok_or("no config")?)?)?;
        let layers = manifest.get("layers").and_then(Value::as_array);
        let names = layers.ok_or("the manifest has no layers")?.iter();
        (config, names.map(blob).collect::<Result<_, _>>()?)
    };
    let mut tree = Tree::new();
    let mut layers = Vec::new();
    for name in layer_names {
        let data = files
            .get(&name)
            .ok_or_else(|| format!("the archive has no layer {name}"))?;
        let paths =
            apply_layer(&mut tree, &decompress(data)?).map_err(|e| format!("layer {name}: {e}"))?;
        layers.push(paths);
    }
    Ok(Image {
        config,
        tree,
        layers,
    })
}

/// Every platform's image of an OCI layout archive whose `index.json` names one image index
/// (a multi-platform `type=oci` export), as `os/arch[/variant]` and the image, in the index's
/// order; attestation manifests (`unknown/unknown`) left out.
pub(crate) fn read_oci_platforms(path: &Path) -> Result<Vec<(String, Image)>, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let files = archive_files(&bytes)?;
    let json = |name: &str| -> Result<Value, String> {
        let data = files
            .get(name)
            .ok_or_else(|| format!("{}: no {name}", path.display()))?;
        serde_json::from_slice(data).map_err(|e| format!("{}: bad {name}: {e}", path.display()))
    };
    let blob = |descriptor: &Value| {
        descriptor
            .get("digest")
            .and_then(Value::as_str)
            .map(|d| format!("blobs/{}", d.replacen(':', "/", 1)))
            .ok_or_else(|| format!("a descriptor without a digest: {descriptor}"))
    };
    let top = json("index.json")?;
    let listed = top
        .pointer("/manifests/0")
        .ok_or("index.json lists nothing")?;
    let index = json(&blob(listed)?)?;
    let mut images = Vec::new();
    for descriptor in index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or("the index has no manifests")?
    {
        let part = |key: &str| {
            descriptor
                .pointer(&format!("/platform/{key}"))
                .and_then(Value::as_str)
        };
        if part("os") == Some("unknown") {
            continue;
        }
        let mut platform = format!(
            "{}/{}",
            part("os").unwrap_or(""),
            part("architecture").unwrap_or("")
        );
        if let Some(variant) = part("variant") {
            platform = format!("{platform}/{variant}");
        }
        let manifest = json(&blob(descriptor)?)?;
        let config = json(&blob(manifest.get("config").ok_or("no config")?)?)?;
        let mut tree = Tree::new();
        let mut layers = Vec::new();
        for layer in manifest
            .get("layers")
            .and_then(Value::as_array)
            .ok_or("the manifest has no layers")?
        {
            let name = blob(layer)?;
            let data = files
                .get(&name)
                .ok_or_else(|| format!("the archive has no layer {name}"))?;
            let paths = apply_layer(&mut tree, &decompress(data)?)
                .map_err(|e| format!("layer {name}: {e}"))?;
            layers.push(paths);
        }
        images.push((
            platform,
            Image {
                config,
                tree,
                layers,
            },
        ));
    }
    Ok(images)
}

/// The image manifest an OCI `index` leads to: its first manifest for a real platform (not an
/// attestation's `unknown/unknown`), through nested indexes.
fn oci_manifest(
    json: &dyn Fn(&str) -> Result<Value, String>,
    index: Value,
) -> Result<Value, String> {
    let manifests = index.get("manifests").and_then(Value::as_array);
    let descriptor = manifests
        .into_iter()
        .flatten()
        .find(|m| m.pointer("/platform/os").and_then(Value::as_str) != Some("unknown"))
        .ok_or("the OCI index lists no image")?;
    let digest = descriptor.get("digest").and_then(Value::as_str);
    let name = format!("blobs/{}", digest.ok_or("no digest")?.replacen(':', "/", 1));
    let document = json(&name)?;
    match descriptor.get("mediaType").and_then(Value::as_str) {
        Some(
            "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json",
        ) => oci_manifest(json, document),
        _ => Ok(document),
    }
}

/// The regular files of an archive by name, symlinks among them resolved (kiln's docker
/// archives link `ID/layer.tar` to `blobs/sha256/...`).
fn archive_files(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let name = clean(&entry.path().map_err(|e| e.to_string())?.to_string_lossy());
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| e.to_string())?
                    .ok_or("a symlink without a target")?;
                let parent = name.rsplit_once('/').map_or("", |(dir, _)| dir);
                let target = clean(&format!("{parent}/{}", target.to_string_lossy()));
                links.insert(name, target);
            }
            kind if kind.is_file() => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
                files.insert(name, data);
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(data) = files.get(&target).cloned() {
            files.insert(name, data);
        }
    }
    Ok(files)
}

/// `a/./b/../c/` as `a/c` (no leading or trailing slash).
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn decompress(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| format!("gunzip: {e}"))?;
        Ok(out)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::decode_all(data).map_err(|e| format!("zstd: {e}"))
    } else {
        Ok(data.to_vec())
    }
}

/// One entry of a layer, read.
struct LayerEntry {
    path: String,
    node: Option<Node>,
    /// A hard link's target (absolute).
    hardlink: Option<String>,
}

/// Applies a layer tar to `tree` as the OCI image spec says: its whiteouts (`.wh.NAME`, and
/// `.wh..wh..opq` for a directory's lower contents) delete from the layers below, then its
/// entries are added, each replacing what was at its path. Returns the paths the layer has
/// entries for (whiteouts included, the root not).
fn apply_layer(tree: &mut Tree, layer: &[u8]) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = format!(
            "/{}",
            clean(&entry.path().map_err(|e| e.to_string())?.to_string_lossy())
        );
        let header = entry.header().clone();
        let link = entry
            .link_name()
            .map_err(|e| e.to_string())?
            .map(|l| l.to_string_lossy().into_owned());
        let mode = header.mode().map_err(|e| format!("{path}: {e}"))? & 0o7777;
        let uid = header.uid().map_err(|e| format!("{path}: {e}"))?;
        let gid = header.gid().map_err(|e| format!("{path}: {e}"))?;
        let mtime = header.mtime().map_err(|e| format!("{path}: {e}"))?;
        let mut hardlink = None;
        let kind = match header.entry_type() {
            tar::EntryType::Directory => Some(Kind::Dir),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(|e| e.to_string())?;
                Some(Kind::File(file_id(&data)))
            }
            tar::EntryType::Symlink => Some(Kind::Symlink(link.unwrap_or_default())),
            tar::EntryType::Link => {
                hardlink = Some(format!("/{}", clean(&link.unwrap_or_default())));
                None
            }
            tar::EntryType::Fifo => Some(Kind::Fifo),
            tar::EntryType::Char | tar::EntryType::Block => Some(Kind::Device(format!(
                "{:?} {:?}:{:?}",
                header.entry_type(),
                header.device_major().ok().flatten(),
                header.device_minor().ok().flatten()
            ))),
            other => return Err(format!("{path}: unexpected entry type {other:?}")),
        };
        entries.push(LayerEntry {
            path,
            node: kind.map(|kind| Node {
                kind,
                mode,
                uid,
                gid,
                mtime,
            }),
            hardlink,
        });
    }
    for entry in &entries {
        let (dir, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
        if name == ".wh..wh..opq" {
            remove_below(tree, dir);
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            let hidden = format!("{dir}/{hidden}");
            tree.remove(&hidden);
            remove_below(tree, &hidden);
        }
    }
    let paths = entries
        .iter()
        .map(|e| e.path.clone())
        .filter(|p| p != "/")
        .collect();
    for entry in entries {
        let name = entry.path.rsplit('/').next().unwrap_or_default();
        if name.starts_with(".wh.") || entry.path == "/" {
            continue;
        }
        let node = match (entry.node, entry.hardlink) {
            (Some(node), _) => node,
            (None, Some(target)) => tree
                .get(&target)
                .cloned()
                .ok_or_else(|| format!("{}: hard link to missing {target}", entry.path))?,
            (None, None) => continue,
        };
        if node.kind != Kind::Dir {
            remove_below(tree, &entry.path);
        }
        add_parents(tree, &entry.path);
        tree.insert(entry.path, node);
    }
    Ok(paths)
}

/// Removes everything below directory `dir` (not `dir` itself).
fn remove_below(tree: &mut Tree, dir: &str) {
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    tree.retain(|path, _| !path.starts_with(&prefix));
}

/// Marks the missing parents of `path` as implicit directories.
fn add_parents(tree: &mut Tree, path: &str) {
    let mut parent = path;
    while let Some((dir, _)) = parent.rsplit_once('/') {
        if dir.is_empty() {
            break;
        }
        tree.entry(dir.to_string()).or_insert(Node {
            kind: Kind::ImplicitDir,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
        });
        parent = dir;
    }
}

/// A file's [`Kind::File`] text: its digest, and the text itself when it is short.
fn file_id(data: &[u8]) -> String {
    let digest = Digest::of(data);
    match std::str::from_utf8(data) {
        Ok(text) if text.len() <= 160 => format!("{digest} {text:?}"),
        _ => digest.to_string(),
    }
}
/// The container config (`config`, every field) and `author` where they differ. Go writes a
/// nil slice or map as `null` where kiln leaves the field out; both mean unset.
pub(crate) fn compare_configs(peer: &Value, kiln: &Value) -> Vec<String> {
    let field = |document: &Value, pointer: &str| {
        document.pointer(pointer).filter(|v| !v.is_null()).cloned()
    };
    let keys = |document: &Value| {
        let fields = document.get("config").and_then(Value::as_object);
        fields
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    let mut names = keys(peer);
    names.extend(keys(kiln));
    names.sort();
    names.dedup();
    let pointers = names
        .iter()
        .map(|f| format!("/config/{f}"))
        .chain(["/author".to_string()]);
    let mut differences = Vec::new();
    for pointer in pointers {
        let (theirs, ours) = (field(peer, &pointer), field(kiln, &pointer));
        if theirs != ours {
            differences.push(format!(
                "config {pointer}: peer {}, kiln {}",
                shown(&theirs),
                shown(&ours)
            ));
        }
    }
    differences
}

/// One history entry: `created_by`, `comment`, `empty_layer`.
type HistoryLine = (String, String, bool);

/// The image history, entry by entry (`created_by`, `comment`, `empty_layer`; not the times),
/// and the number of layers.
pub(crate) fn compare_history(peer: &Image, kiln: &Image) -> Vec<String> {
    let (theirs, ours) = (history(&peer.config), history(&kiln.config));
    let mut differences = Vec::new();
    for index in 0..theirs.len().max(ours.len()) {
        let (a, b) = (theirs.get(index), ours.get(index));
        match (a, b) {
            _ if a == b => {}
            // The same step, empty in kiln's image only: said so, to be told apart.
            (Some((by, comment, false)), Some((kiln_by, kiln_comment, true)))
                if (by, comment) == (kiln_by, kiln_comment) =>
            {
                differences.push(format!(
                    "history[{index}] {by:?}: the peer has a layer, kiln marks it empty_layer"
                ));
            }
            _ => differences.push(format!("history[{index}]: peer {a:?}, kiln {b:?}")),
        }
    }
    if peer.layers.len() != kiln.layers.len() {
        differences.push(format!(
            "layers: peer {}, kiln {}",
            peer.layers.len(),
            kiln.layers.len()
        ));
    }
    differences
}

/// The image's `created` and each history entry's, as written (zone included).
fn compare_times(peer: &Value, kiln: &Value) -> Vec<String> {
    let times = |document: &Value| {
        let mut all = vec![document.get("created").cloned()];
        let list = document.get("history").and_then(Value::as_array);
        all.extend(
            list.into_iter()
                .flatten()
                .map(|h| h.get("created").cloned()),
        );
        all
    };
    let (theirs, ours) = (times(peer), times(kiln));
    let mut differences = Vec::new();
    for index in 0..theirs.len().max(ours.len()) {
        let (a, b) = (
            theirs.get(index).cloned().flatten(),
            ours.get(index).cloned().flatten(),
        );
        if a != b {
            let what = match index {
                0 => "created".to_string(),
                n => format!("history[{}] created", n - 1),
            };
            differences.push(format!("{what}: peer {}, kiln {}", shown(&a), shown(&b)));
        }
    }
    differences
}

fn history(document: &Value) -> Vec<HistoryLine> {
    let list = document.get("history").and_then(Value::as_array);
    list.into_iter()
        .flatten()
        .map(|entry| {
            let text = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let empty = entry.get("empty_layer").and_then(Value::as_bool);
            (text("created_by"), text("comment"), empty.unwrap_or(false))
        })
        .collect()
}

fn shown(value: &Option<Value>) -> String {
    value
        .as_ref()
        .map_or_else(|| "unset".to_string(), Value::to_string)
}

/// Every path whose presence or node (and time, `with_mtime`) differs between two trees.
pub(crate) fn compare_trees(
    left_name: &str,
    left: &Tree,
    right_name: &str,
    right: &Tree,
    with_mtime: bool,
) -> Vec<String> {
    let mut differences = Vec::new();
    for (path, node) in left {
        match right.get(path) {
            None => differences.push(format!(
                "{path}: {left_name} has {node:?}, {right_name} has nothing"
            )),
            Some(other) if !other.same(node, with_mtime) => differences.push(format!(
                "{path}: {left_name} has {node:?}, {right_name} has {other:?}"
            )),
            Some(_) => {}
        }
    }
    for (path, node) in right {
        if !left.contains_key(path) {
            differences.push(format!(
                "{path}: {left_name} has nothing, {right_name} has {node:?}"
            ));
        }
    }
    differences
}

/// The paths at or below `dirs` in `tree` whose time is not that of a checkout made while the
/// build ran (`window`, Unix seconds, a second of slack on each side), or that have the commit's
/// time: a difference each.
fn checkout_times(who: &str, tree: &Tree, dirs: &[&str], window: (u64, u64)) -> Vec<String> {
    let below = |path: &str| {
        dirs.iter().any(|dir| {
            *dir == "/"
                || path == *dir
                || path
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    };
    let mut differences = Vec::new();
    let mut seen = 0;
    for (path, node) in tree.iter().filter(|(path, _)| below(path)) {
        seen += 1;
        let checked_out = node.mtime + 1 >= window.0 && node.mtime <= window.1 + 1;
        if !checked_out || node.mtime == COMMIT_TIME as u64 {
            differences.push(format!(
                "{path}: {who}'s mtime {} is not the checkout's (its build ran {}..{})",
                node.mtime, window.0, window.1
            ));
        }
    }
    if seen == 0 {
        differences.push(format!("{who} has nothing below {dirs:?}"));
    }
    differences
}

/// Unix seconds now.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Commits the case's `repo/` (moved out of its context) to `@GIT@/NAME.git`: branch `main`,
/// annotated tag `v1`. Every directory gets a `.run` file naming this run: BuildKit keys a copy
/// from a git checkout by the content it copies, so a tree it saw in an earlier run would give
/// that run's layer, with that checkout's times.
fn publish_repository(peers: &Peers, case: &Case, context: &Path) {
    let repo = peers.git.repo(case.name);
    let tree = context.join("repo");
    copy_tree(&tree, &repo.work);
    fs::remove_dir_all(&tree).expect("remove repo/ from the context");
    mark_run(&repo.work, &peers.run_id);
    git(&repo.work, &["add", "-A"]);
    let date: Vec<(&str, &str)> = case
        .committer_date
        .map(|date| ("GIT_COMMITTER_DATE", date))
        .into_iter()
        .collect();
    git_with(
        &repo.work,
        &[
            "commit",
            "-q",
            "-m",
            &format!("{} {}", case.name, peers.run_id),
        ],
        &date,
    );
    repo.push();
    repo.annotated_tag("v1");
}

/// Writes `.run` (holding `run_id`) into `dir` and each directory below it but `.git`.
fn mark_run(dir: &Path, run_id: &str) {
    fs::write(dir.join(".run"), run_id).expect("write .run");
    for entry in fs::read_dir(dir).expect("read directory").flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && entry.file_name() != ".git" {
            mark_run(&entry.path(), run_id);
        }
    }
}

/// `docker run` of the peer's image and of kiln's (both `docker load`ed into the peer dockerd),
/// and `kiln run`: the same output. Returns the differences (`kiln run` gives the same
/// supplementary groups as docker since issue 12, item 10).
fn compare_runs(peers: &Peers, case: &Case, peer_tar: &Path, kiln_tar: &Path) -> Vec<String> {
    let docker = &peers.docker;
    let kiln_image = format!("kiln-peercmp-{}", case.name);
    let peer_image = format!("kiln-peer-{}", case.name);
    for tar in [peer_tar, kiln_tar] {
        if let Err(err) = run(
            docker.command().arg("load").arg("-i").arg(tar),
            "docker load",
        ) {
            return vec![err];
        }
    }
    let docker_run = |image: &str| {
        let mut command = docker.command();
        command.args(["run", "--rm", "--network", "host", image]);
        run(&mut command, &format!("docker run {image}"))
    };
    let kiln_run = kiln().root(&peers.root).args(["run", "--rm", &kiln_image]);
    let peer_output = docker_run(&peer_image);
    let loaded_output = docker_run(&kiln_image);
    let kiln_output = checked(kiln_run.run().into(), "kiln run");
    for image in [&kiln_image, &peer_image] {
        let _ = run(docker.command().args(["rmi", image]), "docker rmi");
    }
    let mut differences = Vec::new();
    if loaded_output != peer_output {
        differences.push(format!(
            "docker run of kiln's image printed {loaded_output:?}, of the peer's {peer_output:?}"
        ));
    }
    if kiln_output != peer_output {
        differences.push(format!(
            "kiln run printed {kiln_output:?}, docker run of the peer's image {peer_output:?}"
        ));
    }
    differences
}
