//! `ADD <http url>` end to end against an HTTP server each test starts on loopback: the file's
//! name, mode (0600), owner and mtime (`Last-Modified`), as BuildKit v0.32's http source gives
//! them; the cache (an unchanged URL is asked with `If-None-Match` and its `304` is a cache hit
//! without a body; a changed body is a new key); `--checksum`; `--unpack`; a connection that
//! breaks mid-body; names from outside that must stay in the destination.

use crate::build::{Builder, builder};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server answers for a path.
#[derive(Clone, Default)]
struct Resource {
    body: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
    content_disposition: Option<String>,
    /// Send the full `Content-Length` but only this many bytes, then close.
    cut_after: Option<usize>,
}

/// What the server saw.
#[derive(Default)]
struct Log {
    /// Path and `If-None-Match` of every request.
    requests: Vec<(String, Option<String>)>,
    /// How many responses carried a body (complete or cut).
    bodies: usize,
}

/// A tiny HTTP/1.1 server (one request per connection) on a free loopback port.
struct Server {
    port: u16,
    resources: Arc<Mutex<HashMap<String, Resource>>>,
    log: Arc<Mutex<Log>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let resources: Arc<Mutex<HashMap<String, Resource>>> = Arc::default();
        let log: Arc<Mutex<Log>> = Arc::default();
        let (r, l) = (resources.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || serve(stream, &r, &l));
            }
        });
        Server {
            port,
            resources,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, resource: Resource) {
        self.resources
            .lock()
            .unwrap()
            .insert(path.to_string(), resource);
    }

    fn requests(&self) -> Vec<(String, Option<String>)> {
        self.log.lock().unwrap().requests.clone()
    }

    fn bodies(&self) -> usize {
        self.log.lock().unwrap().bodies
    }
}

fn serve(stream: TcpStream, resources: &Mutex<HashMap<String, Resource>>, log: &Mutex<Log>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut if_none_match = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("if-none-match")
        {
            if_none_match = Some(value.trim().to_string());
        }
    }
    log.lock()
        .unwrap()
        .requests
        .push((path.clone(), if_none_match.clone()));
    let resource = resources.lock().unwrap().get(&path).cloned();
    let mut out = stream;
    let Some(resource) = resource else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let mut head = String::new();
    if let Some(etag) = &resource.etag {
        head.push_str(&format!("ETag: \"{etag}\"\r\n"));
    }
    if let Some(date) = &resource.last_modified {
        head.push_str(&format!("Last-Modified: {date}\r\n"));
    }
    if let Some(cd) = &resource.content_disposition {
        head.push_str(&format!("Content-Disposition: {cd}\r\n"));
    }
    let unchanged = match (&resource.etag, &if_none_match) {
        (Some(etag), Some(asked)) => asked
            .split(',')
            .any(|t| t.trim().trim_start_matches("W/").trim_matches('"') == etag),
        _ => false,
    };
    if unchanged {
        let _ = out.write_all(
            format!("HTTP/1.1 304 Not Modified\r\n{head}Connection: close\r\n\r\n").as_bytes(),
        );
        return;
    }
    log.lock().unwrap().bodies += 1;
    let _ = out.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{head}Connection: close\r\n\r\n",
            resource.body.len()
        )
        .as_bytes(),
    );
    let sent = resource.cut_after.unwrap_or(resource.body.len());
    let _ = out.write_all(&resource.body[..sent]);
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

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
    assert_eq!(requests[1].1.as_deref(), Some("\"v1\""));
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
