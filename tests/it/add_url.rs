//! `ADD <http url>` end to end against an HTTP server each test starts on loopback: the file's
//! name, mode (0600), owner and mtime (`Last-Modified`), as BuildKit v0.32's http source gives
//! them; the cache (an unchanged URL is asked with `If-None-Match` and its `304` is a cache hit
//! without a body; a changed body is a new key); `--checksum`; `--unpack`; a connection that
//! breaks mid-body; names from outside that must stay in the destination.

use crate::build::{Builder, builder};
use crate::support::http::{Resource, Server};

const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const LAST_MODIFIED_SECONDS: &str = "784111777";

fn text(body: &str, etag: Option<&str>) -> Resource {
    Resource {
        body: body.as_bytes().to_vec(),
        etag: etag.map(str::to_string),
        last_modified: Some(LAST_MODIFIED.to_string()),
        ..Resource::default()
    }
}

/// Builds `dockerfile` (after `FROM base`) as `img`.
fn build(builder: &Builder, dockerfile: &str) -> crate::build::Built {
    let dockerfile = format!("FROM base\n{dockerfile}");
    let ctx = builder.context(&[("Dockerfile", &dockerfile)]);
    builder.build(ctx.path(), &["-t", "img"])
}

/// `stat -c '%a %u:%g %Y' PATH` in `img`.
fn stat(builder: &Builder, path: &str) -> String {
    builder
        .run("img", "stat", &["-c", "%a %u:%g %Y", path])
        .trim()
        .to_string()
}

fn cat(builder: &Builder, path: &str) -> String {
    builder.run("img", "cat", &[path])
}

#[test]
fn an_unchanged_url_is_a_cache_hit_without_its_body_and_a_changed_one_is_not() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    server.set("/files/hello.txt", text("hello\n", Some("v1")));
    let add = format!("ADD {} /dst/", server.url("/files/hello.txt"));

    let first = build(&builder, &add);
    first.ok();
    assert_eq!(first.events.ran(), [add.as_str()]);
    assert_eq!(cat(&builder, "/dst/hello.txt"), "hello\n");
    // BuildKit: 0600, root's, mtime from Last-Modified.
    assert_eq!(
        stat(&builder, "/dst/hello.txt"),
        format!("600 0:0 {LAST_MODIFIED_SECONDS}")
    );
    assert_eq!(server.bodies(), 1);

    let second = build(&builder, &add);
    second.ok();
    assert_eq!(second.events.hits(), ["FROM base", add.as_str()]);
    assert!(second.events.ran().is_empty(), "{:?}", second.events.ran());
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].if_none_match.as_deref(), Some("\"v1\""));
    assert_eq!(server.bodies(), 1, "the 304 sent no body");

    server.set("/files/hello.txt", text("changed\n", Some("v2")));
    let third = build(&builder, &add);
    third.ok();
    assert_eq!(third.events.ran(), [add.as_str()]);
    assert_eq!(cat(&builder, "/dst/hello.txt"), "changed\n");
    assert_eq!(server.bodies(), 2);
}

#[test]
fn checksum_chmod_chown_a_file_destination_and_unpack() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    server.set("/pkg/data.bin", text("payload\n", None));
    let wrong = format!("sha256:{}", "0".repeat(64));

    let url = server.url("/pkg/data.bin");
    let failed = build(&builder, &format!("ADD --checksum={wrong} {url} /opt/x\n"));
    let stderr = failed.fails();
    assert!(stderr.contains("digest mismatch"), "{stderr}");
    assert!(stderr.contains(&wrong), "{stderr}");
    assert!(stderr.contains("sha256:"), "{stderr}");
    let actual = stderr
        .split("digest mismatch for ")
        .nth(1)
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no actual digest in {stderr}"))
        .to_string();
    // Nothing stored.
    let blob = builder
        .root()
        .join("blobs/sha256")
        .join(actual.trim_start_matches("sha256:"));
    assert!(!blob.exists(), "{} was stored", blob.display());

    let tar_gz = {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(6);
        tar.append_data(&mut header, "inner.txt", &b"inner\n"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap()
    };
    server.set(
        "/a.tar.gz",
        Resource {
            body: tar_gz,
            ..Resource::default()
        },
    );
    let tar_url = server.url("/a.tar.gz");
    let checksum = format!("sha256:{}", sha256_hex(b"payload\n"));
    let built = build(
        &builder,
        &format!(
            "ADD --checksum={checksum} --chmod=644 --chown=1234:4321 {url} /opt/renamed\n\
             ADD {tar_url} /t/\n\
             ADD --unpack=true {tar_url} /u/\n"
        ),
    );
    built.ok();
    assert_eq!(cat(&builder, "/opt/renamed"), "payload\n");
    assert_eq!(
        stat(&builder, "/opt/renamed"),
        format!("644 1234:4321 {LAST_MODIFIED_SECONDS}")
    );
    // A remote tar stays a file unless --unpack=true; no Last-Modified: the epoch.
    assert_eq!(stat(&builder, "/t/a.tar.gz"), "600 0:0 0");
    assert_eq!(cat(&builder, "/u/inner.txt"), "inner\n");

    // A pinned checksum whose content is stored is the key without asking the server.
    let asked = server.requests().len();
    let again = build(
        &builder,
        &format!("ADD --checksum={checksum} --chmod=644 --chown=1234:4321 {url} /opt/renamed\n"),
    );
    again.ok();
    assert!(again.events.ran().is_empty(), "{:?}", again.events.ran());
    assert_eq!(server.requests().len(), asked);
}

#[test]
fn a_body_over_the_size_cap_fails() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    server.set("/large", text(&"y".repeat(4096), None));
    let ctx = builder.context(&[(
        "Dockerfile",
        &format!("FROM base\nADD {} /large\n", server.url("/large")),
    )]);
    let context = ctx.path().display().to_string();
    let out = builder
        .kiln(&["build", "-t", "img", &context])
        .env("KILN_ADD_MAX_BYTES", "1000")
        .run()
        .failure();
    let stderr = out.stderr_str();
    assert!(
        stderr.contains("the body is larger than 1000 bytes"),
        "{stderr}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_connection_broken_mid_body_fails_after_retries() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    server.set(
        "/big",
        Resource {
            body: vec![b'x'; 100_000],
            cut_after: Some(1000),
            ..Resource::default()
        },
    );
    let failed = build(&builder, &format!("ADD {} /big\n", server.url("/big")));
    let stderr = failed.fails();
    assert!(stderr.contains("GET http://127.0.0.1"), "{stderr}");
    assert!(stderr.contains("failed after 5 attempt(s)"), "{stderr}");
    assert_eq!(server.requests().len(), 5, "one try and four retries");
}

#[test]
fn a_server_that_stalls_mid_body_times_out_and_stores_nothing() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    // Silent for longer than the timeout: without one, every attempt would end with the
    // server's close after 20 s, as an incomplete body, not a timeout.
    server.set(
        "/slow",
        Resource {
            body: vec![b'z'; 100_000],
            stall_after: Some((1000, std::time::Duration::from_secs(20))),
            ..Resource::default()
        },
    );
    let ctx = builder.context(&[(
        "Dockerfile",
        &format!("FROM base\nADD {} /slow\n", server.url("/slow")),
    )]);
    let blobs_before = blob_count(&builder);
    let context = ctx.path().display().to_string();
    let out = builder
        .kiln(&["build", "-t", "img", &context])
        .env("KILN_ADD_TIMEOUT", "1")
        .run()
        .failure();
    let stderr = out.stderr_str();
    assert!(stderr.contains("timed out"), "{stderr}");
    assert!(stderr.contains("failed after 5 attempt(s)"), "{stderr}");
    assert_eq!(server.requests().len(), 5, "one try and four retries");
    assert_eq!(
        blob_count(&builder),
        blobs_before,
        "no partial download stored"
    );
}

/// How many blobs the builder's store holds.
fn blob_count(builder: &Builder) -> usize {
    std::fs::read_dir(builder.root().join("blobs/sha256"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[test]
fn names_from_outside_stay_in_the_destination() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    // The dot segments are resolved before the request (the server sees `/etc/x.txt`), and a
    // Content-Disposition never names the file (BuildKit's front end names it).
    server.set(
        "/etc/x.txt",
        Resource {
            body: b"x\n".to_vec(),
            content_disposition: Some("attachment; filename=\"../../escape\"".to_string()),
            ..Resource::default()
        },
    );
    let built = build(
        &builder,
        &format!("ADD {} /dst/\n", server.url("/a/../../etc/x.txt")),
    );
    built.ok();
    assert_eq!(server.requests()[0].path, "/etc/x.txt");
    assert_eq!(cat(&builder, "/dst/x.txt"), "x\n");
    let listing = builder.run("img", "ls", &["-a", "/", "/dst"]);
    assert!(!listing.contains("escape"), "{listing}");

    // A name with wildcard characters is the file's name, not a pattern.
    server.set("/file%5B1%5D.txt", text("one\n", None));
    let built = build(
        &builder,
        &format!("ADD {} /dst/\n", server.url("/file%5B1%5D.txt")),
    );
    built.ok();
    assert_eq!(cat(&builder, "/dst/file[1].txt"), "one\n");

    // An encoded slash or escape sequence in the last segment is refused before any request.
    let before = server.requests().len();
    for hostile in ["/a%2F..%2F..%2Fetc%2Fpasswd", "/x%1b%5b31mred"] {
        let failed = build(&builder, &format!("ADD {} /dst/\n", server.url(hostile)));
        let stderr = failed.fails();
        assert!(stderr.contains("is not a file name"), "{stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "a raw escape reached the terminal: {stderr:?}"
        );
    }
    assert_eq!(server.requests().len(), before);
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
        } else if meta.is_file()
            && let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn credentials_come_from_the_hosts_secrets_and_reach_no_log_store_or_other_host() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    let other = Server::start();
    const HEADER: &str = "Basic a2lsbjpzM2NyZXQtaGVhZGVyLXZhbHVl";
    const TOKEN: &str = "s3cret-token-value";
    server.set(
        "/private/data.txt",
        Resource {
            authorization: Some(HEADER.to_string()),
            etag: Some("v1".to_string()),
            ..Resource::body("private\n")
        },
    );
    server.set(
        "/token/data.txt",
        Resource {
            authorization: Some(format!("Bearer {TOKEN}")),
            ..Resource::body("tokened\n")
        },
    );
    // A redirect to another port is another origin: the header must not follow it.
    server.set(
        "/moved/data.txt",
        Resource {
            authorization: Some(HEADER.to_string()),
            redirect: Some(other.url("/landed/data.txt")),
            ..Resource::default()
        },
    );
    other.set("/landed/data.txt", Resource::body("landed\n"));
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let token_flag = format!("id=HTTP_AUTH_TOKEN_127.0.0.1,src={}", token_file.display());
    let header_flag = "id=HTTP_AUTH_HEADER_127.0.0.1,env=KILN_TEST_AUTH";
    // `ADD <path's URL> /d/`, built with `secrets` (`--secret` values).
    let add = |path: &str, secrets: &[&str]| {
        let ctx = builder.context(&[(
            "Dockerfile",
            &format!("FROM base\nADD {} /d/\n", server.url(path)),
        )]);
        let context = ctx.path().display().to_string();
        let mut args = vec!["build", "--progress", "json", "-t", "img"];
        for secret in secrets {
            args.extend(["--secret", secret]);
        }
        args.push(&context);
        builder.kiln(&args).env("KILN_TEST_AUTH", HEADER).run()
    };

    let refused = add("/private/data.txt", &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr_str().contains("401 Unauthorized"),
        "{}",
        refused.stderr_str()
    );
    assert_eq!(server.requests().last().unwrap().authorization, None);

    // Both secrets for one host: the token replaces the header (BuildKit sets it last).
    let both = add("/private/data.txt", &[header_flag, &token_flag]);
    assert_eq!(both.status.code(), Some(1));
    assert_eq!(
        server.requests().last().unwrap().authorization,
        Some(format!("Bearer {TOKEN}"))
    );

    let first = add("/private/data.txt", &[header_flag]);
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr_str());
    assert_eq!(cat(&builder, "/d/data.txt"), "private\n");
    // Unchanged: asked again with the secret and If-None-Match, and a cache hit.
    let second = add("/private/data.txt", &[header_flag]);
    let events = crate::build::Events::parse(&second.stderr_str());
    assert_eq!(second.status.code(), Some(0), "{}", second.stderr_str());
    assert!(events.ran().is_empty(), "{:?}", events.ran());
    let last = server.requests().last().cloned().unwrap();
    assert_eq!(last.authorization.as_deref(), Some(HEADER));
    assert_eq!(last.if_none_match.as_deref(), Some("\"v1\""));

    let tokened = add("/token/data.txt", &[&token_flag]);
    assert_eq!(tokened.status.code(), Some(0), "{}", tokened.stderr_str());
    assert_eq!(cat(&builder, "/d/data.txt"), "tokened\n");

    let moved = add("/moved/data.txt", &[header_flag]);
    assert_eq!(moved.status.code(), Some(0), "{}", moved.stderr_str());
    assert_eq!(cat(&builder, "/d/data.txt"), "landed\n");
    let landed = other.requests();
    assert_eq!(landed.len(), 1, "{landed:?}");
    assert_eq!(
        landed[0].authorization, None,
        "the header followed a redirect"
    );

    // No secret byte in any log, nor anywhere in the store (url records, blobs, layers,
    // configs, cache records).
    for out in [&refused, &both, &first, &second, &tokened, &moved] {
        let all = format!("{}{}", out.stdout_str(), out.stderr_str());
        assert!(!all.contains("a2lsbjpz") && !all.contains(TOKEN), "{all}");
    }
    for needle in ["a2lsbjpzM2NyZXQtaGVhZGVyLXZhbHVl", TOKEN] {
        let leaked = files_containing(builder.root(), needle.as_bytes());
        assert!(leaked.is_empty(), "{needle} is stored in {leaked:?}");
    }
}

/// The image's config as stored.
fn config(builder: &Builder, image: &str) -> serde_json::Value {
    let store = kiln::store::Store::open(builder.root()).expect("store");
    let stored = store.resolve(image).expect("image");
    serde_json::from_slice(&stored.config_bytes).expect("config")
}

/// `created` and the `created` of the history entries after the base image's.
fn times(builder: &Builder, image: &str) -> (String, Vec<String>) {
    let config = config(builder, image);
    let base = self::config(builder, "base")["history"]
        .as_array()
        .map_or(0, Vec::len);
    let history = config["history"].as_array().cloned().unwrap_or_default();
    (
        config["created"].as_str().unwrap_or_default().to_string(),
        history[base..]
            .iter()
            .map(|h| h["created"].as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

/// A gzip tar of empty regular files and directories, each with its mtime.
fn archive(entries: &[(&str, tar::EntryType, u64)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, kind, mtime) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_mtime(*mtime);
        header.set_size(0);
        tar.append_data(&mut header, name, std::io::empty())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// `SOURCE_DATE_EPOCH=<stage>`, with a stage that ADDs a URL (BuildKit v0.32 epoch.go, checked
/// with buildctl): the time is the URL's `Last-Modified`; without one, the newest regular
/// file of the archive it is, or none for a file that is no archive; with a `--checksum`
/// (which BuildKit resolves without asking), never `Last-Modified`. The stages see the time in
/// seconds as `SOURCE_DATE_EPOCH` (empty without a time); the image's `created` and its new
/// history entries are that time.
#[test]
fn a_stage_adding_a_url_gives_source_date_epoch() {
    let Some(builder) = builder() else { return };
    let server = Server::start();
    server.set("/f.txt", text("file\n", Some("f1")));
    let newest = 1_500_000_000;
    let tarball = archive(&[
        ("d/", tar::EntryType::Directory, 1_700_000_000),
        ("d/old", tar::EntryType::Regular, 1_400_000_000),
        ("new", tar::EntryType::Regular, newest),
    ]);
    server.set(
        "/no-date.tgz",
        Resource {
            body: tarball.clone(),
            ..Resource::default()
        },
    );
    server.set(
        "/dated.tgz",
        Resource {
            body: tarball.clone(),
            last_modified: Some(LAST_MODIFIED.to_string()),
            ..Resource::default()
        },
    );
    server.set("/no-date.txt", Resource::body("plain\n"));
    let dockerfile = |source: &str| {
        format!(
            "ARG SOURCE_DATE_EPOCH=src\n\
             FROM scratch AS src\n\
             ARG FILE\n\
             ADD {source} /\n\
             FROM base\n\
             ARG SOURCE_DATE_EPOCH\n\
             RUN echo \"[$SOURCE_DATE_EPOCH]\" > /epoch\n\
             ENV A=1\n"
        )
    };
    let build = |source: &str, args: &[&str]| {
        let ctx = builder.context(&[("Dockerfile", &dockerfile(source))]);
        let mut all = vec!["-t", "img"];
        all.extend(args);
        builder.build(ctx.path(), &all)
    };

    // Last-Modified (the file name comes from a stage ARG, expanded as BuildKit does).
    build(&server.url("/${FILE}"), &["--build-arg", "FILE=f.txt"]).ok();
    let lm = "1994-11-06T08:49:37Z".to_string();
    // ARG, RUN and ENV: every new history entry has the time.
    assert_eq!(times(&builder, "img"), (lm.clone(), vec![lm; 3]));
    assert_eq!(
        cat(&builder, "/epoch"),
        format!("[{LAST_MODIFIED_SECONDS}]\n")
    );

    // No Last-Modified: the newest regular file of the archive (not the newer directory).
    build(&server.url("/no-date.tgz"), &[]).ok();
    let at = "2017-07-14T02:40:00Z".to_string();
    assert_eq!(times(&builder, "img"), (at.clone(), vec![at; 3]));
    assert_eq!(cat(&builder, "/epoch"), format!("[{newest}]\n"));

    // A pinned checksum: the archive's time even though the server sends Last-Modified.
    let checksum = format!("sha256:{}", sha256_hex(&tarball));
    let ctx = builder.context(&[(
        "Dockerfile",
        &dockerfile(&server.url("/dated.tgz"))
            .replace("ADD ", &format!("ADD --checksum={checksum} ")),
    )]);
    builder.build(ctx.path(), &["-t", "img"]).ok();
    assert_eq!(cat(&builder, "/epoch"), format!("[{newest}]\n"));

    // No Last-Modified and no archive: no epoch, and the stages see it empty.
    let before = kiln::oci::timestamp::now_seconds();
    build(&server.url("/no-date.txt"), &[]).ok();
    assert_eq!(cat(&builder, "/epoch"), "[]\n");
    let created = kiln::oci::timestamp::parse_rfc3339(&times(&builder, "img").0).unwrap();
    assert!(
        created >= before - 5,
        "created {created}, not the build's time"
    );

    // A dry run asks nothing, and says where the time will come from.
    let asked = server.requests().len();
    let ctx = builder.context(&[("Dockerfile", &dockerfile(&server.url("/f.txt")))]);
    let dry = builder
        .kiln(&["build", "--dry-run", &ctx.path().display().to_string()])
        .run()
        .success()
        .stdout_str();
    assert!(
        dry.contains(&format!(
            "epoch       the time of {} (SOURCE_DATE_EPOCH; the build asks it)",
            server.url("/f.txt")
        )),
        "{dry}"
    );
    assert_eq!(server.requests().len(), asked);

    // A server that fails: the build says which source it could not ask.
    let failed = build(&server.url("/missing"), &[]);
    let stderr = failed.fails();
    assert!(
        stderr.contains(&format!(
            "cannot take SOURCE_DATE_EPOCH from {}",
            server.url("/missing")
        )),
        "{stderr}"
    );
}
