//! The registry client against real registries on loopback: Debian's `docker-registry`
//! (distribution 2.8) started by each test on a free port with its own storage, plain, with
//! htpasswd basic auth, and behind a token server the test runs (a real bearer-token flow: the
//! registry verifies the JWTs the test signs with `openssl`). Round trips keep every digest; the
//! peer dockerd and skopeo read what kiln pushes, and kiln builds FROM what docker pushes.
//! Faults come from a small proxy in front of the registry: a corrupted blob, a connection cut
//! in the middle of an upload, the registry killed during a push.

use crate::support;
use crate::support::{Kiln, kiln};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use kiln::cache::remote::CacheTransport as _;
use kiln::cache::remote::RegistryCache;
use kiln::oci::Digest;
use kiln::oci::reference::Reference;
use kiln::registry::{self, Client, ClientOptions, NoProgress};
use kiln::store::BlobStore;
use kiln::store::Store;
use serde_json::{Value, json};
use std::fs;
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const USER: &str = "alice";
const PASSWORD: &str = "wonderland";
/// bcrypt (cost 4) of [`PASSWORD`], made once with libxcrypt (`crypt(3)`, `$2b$`); distribution's
/// htpasswd accepts only bcrypt entries.
const PASSWORD_BCRYPT: &str = "$2b$04$PfppzGxiqs7Avh5Yi0zCCeZU905W0BMYndFUCNgS2J4BoyYhzyZQG";

/// How a test registry authenticates.
pub(crate) enum Auth {
    Anonymous,
    /// htpasswd with [`USER`]/[`PASSWORD`].
    Basic,
    /// Bearer tokens from a [`TokenServer`], verified with its certificate.
    Token(Arc<TokenServer>),
}

/// A `docker-registry` process on a free loopback port; killed when dropped.
pub(crate) struct TestRegistry {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

/// A free loopback port (bound then released: the registry binds it right after).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Waits until something accepts connections on `port`.
fn wait_for_port(port: u16) {
    for _ in 0..400 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

impl TestRegistry {
    /// Starts a registry, or `None` (a skip notice; a failure under CI=true) without the binary.
    pub(crate) fn start(auth: Auth) -> Option<TestRegistry> {
        let binary = PathBuf::from(REGISTRY_BIN);
        support::require(
            &format!("{REGISTRY_BIN} (Debian package docker-registry)"),
            binary.is_file().then_some(()),
        )?;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let auth_section = match &auth {
            Auth::Anonymous => String::new(),
            Auth::Basic => {
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{USER}:{PASSWORD_BCRYPT}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                    htpasswd.display()
                )
            }
            Auth::Token(server) => format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {}\n    \
                 issuer: {}\n    rootcertbundle: {}\n",
                server.port,
                TokenServer::SERVICE,
                TokenServer::ISSUER,
                server.cert.display()
            ),
        };
        // A fixed http.secret: upload state survives a restart (distribution signs it).
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: kiln-test-secret\n{auth_section}",
            dir.path().join("data").display()
        );
        fs::write(dir.path().join("config.yml"), config).expect("registry config");
        let mut registry = TestRegistry {
            child: None,
            port,
            dir,
        };
        registry.restart();
        Some(registry)
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL: no clean shutdown).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process (again) on the same port and storage.
    fn restart(&mut self) {
        self.kill();
        let log = fs::File::create(self.dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        wait_for_port(self.port);
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A token server for distribution's `auth: token` (the docker token spec): it issues RS256 JWTs
/// signed with its key (by `openssl dgst`), carrying its certificate in `x5c`, granting the
/// requested scopes to [`USER`] with [`PASSWORD`] and nothing to anyone else.
pub(crate) struct TokenServer {
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    cert_der_base64: String,
    /// Every token request's query, in order.
    requests: Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    const SERVICE: &str = "kiln-test-registry";
    const ISSUER: &str = "kiln-test-issuer";

    fn start() -> Option<Arc<TokenServer>> {
        let openssl = support::tool("openssl")?;
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let made = Command::new(&openssl)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=kiln-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl req");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let der = Command::new(&openssl)
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl x509");
        assert!(der.status.success());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = Arc::new(TokenServer {
            port: listener.local_addr().expect("address").port(),
            cert,
            key,
            cert_der_base64: STANDARD.encode(&der.stdout),
            requests: Mutex::new(Vec::new()),
            _dir: dir,
        });
        let serving = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = serving.clone();
                std::thread::spawn(move || server.answer(stream));
            }
        });
        Some(server)
    }

    fn answer(&self, mut stream: TcpStream) {
        let Some(request) = read_request(&mut stream) else {
            return;
        };
        let query = request
            .target
            .split_once('?')
            .map_or("", |(_, q)| q)
            .to_string();
        self.requests.lock().expect("lock").push(query.clone());
        let expected = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
        if request.header("authorization") != Some(expected.as_str()) {
            let body = r#"{"details":"incorrect username or password"}"#;
            let _ = write_response(&mut stream, "401 Unauthorized", &[], body.as_bytes());
            return;
        }
        let mut access = Vec::new();
        for (name, value) in url_pairs(&query) {
            if name != "scope" {
                continue;
            }
            for scope in value.split(' ') {
                let mut parts = scope.splitn(3, ':');
                if let (Some(kind), Some(repo), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    let actions: Vec<&str> = actions.split(',').collect();
                    access.push(json!({"type": kind, "name": repo, "actions": actions}));
                }
            }
        }
        let token = self.sign(&json!({
            "iss": Self::ISSUER,
            "sub": USER,
            "aud": Self::SERVICE,
            "exp": now() + 300,
            "nbf": now() - 10,
            "iat": now(),
            "jti": format!("{}", now()),
            "access": access,
        }));
        // `access_token` alone, as OAuth2 token servers answer: the client takes either.
        let body = json!({"access_token": token, "expires_in": 300}).to_string();
        let _ = write_response(&mut stream, "200 OK", &[], body.as_bytes());
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [self.cert_der_base64]});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut openssl = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run openssl dgst");
        openssl
            .stdin
            .take()
            .expect("stdin")
            .write_all(signing_input.as_bytes())
            .expect("write to openssl");
        let out = openssl.wait_with_output().expect("openssl dgst");
        assert!(out.status.success());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `a=b&c=d` decoded (`%XX` and `+`).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                other => out.push(other),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// One HTTP/1.1 request as the proxy and token server read it.
struct Request {
    method: String,
    target: String,
    /// The head's lines after the request line, as sent.
    head: Vec<String>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads a request with a `Content-Length` body (what reqwest sends); `None` at end of stream.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_string();
    let target = words.next()?.to_string();
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let mut request = Request {
        method,
        target,
        head,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; length];
    reader.read_exact(&mut request.body).ok()?;
    Some(request)
}

fn write_response(
    stream: &mut TcpStream,
    status: &str,
    headers: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// Pass it on and the reply back.
    Forward,
    /// Pass it on; flip a byte of the reply's body (same length).
    Corrupt,
    /// Close the connection without passing it on (a broken connection).
    Cut,
    /// Pass it on; send back only the first half of the reply, then close (a download cut off).
    Truncate,
    /// Answer 503 without passing it on (a registry behind an overloaded load balancer).
    Unavailable,
}

/// A proxy in front of a registry: one request per connection, passed on with `Connection:
/// close`, its fate decided by `decide(method, path)`.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    /// `METHOD PATH [Range: R]` of every request, in order of arrival.
    log: Arc<Mutex<Vec<String>>>,
}

pub(crate) type Decide = dyn Fn(&str, &str) -> Act + Send + Sync;

pub(crate) fn proxy(upstream: u16, decide: Arc<Decide>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let logged = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (decide, log) = (decide.clone(), logged.clone());
            std::thread::spawn(move || relay(stream, upstream, &*decide, &log));
        }
    });
    Proxy { port, log }
}

fn relay(mut client: TcpStream, upstream: u16, decide: &Decide, log: &Mutex<Vec<String>>) {
    let Some(request) = read_request(&mut client) else {
        return;
    };
    let path = request.target.split('?').next().unwrap_or("").to_string();
    let mut line = format!("{} {path}", request.method);
    if let Some(range) = request.header("range") {
        line.push_str(&format!(" Range: {range}"));
    }
    log.lock().expect("lock").push(line);
    let act = decide(&request.method, &path);
    match act {
        Act::Cut => {
            let _ = client.shutdown(std::net::Shutdown::Both);
            return;
        }
        Act::Unavailable => {
            let _ = write_response(&mut client, "503 Service Unavailable", &[], b"{}");
            return;
        }
        Act::Forward | Act::Corrupt | Act::Truncate => {}
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for line in &request.head {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    if server.write_all(head.as_bytes()).is_err() || server.write_all(&request.body).is_err() {
        return;
    }
    let mut reply = Vec::new();
    if server.read_to_end(&mut reply).is_err() {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    if act == Act::Corrupt
        && let Some(start) = reply.windows(4).position(|w| w == b"\r\n\r\n")
        && reply.len() > start + 4
        && let Some(last) = reply.last_mut()
    {
        *last ^= 0xff;
    }
    if act == Act::Truncate {
        let half = reply.len() / 2;
        let _ = client.write_all(reply.get(..half).unwrap_or_default());
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = client.write_all(&reply);
}

/// A store of its own (one "machine"), driven through the kiln binary.
struct Machine {
    root: tempfile::TempDir,
    /// docker's config directory for this machine's `kiln login`.
    docker_config: tempfile::TempDir,
    path_prefix: Option<PathBuf>,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            root: tempfile::tempdir().expect("temp dir"),
            docker_config: tempfile::tempdir().expect("temp dir"),
            path_prefix: None,
        }
    }

    /// `kiln --root ROOT ARGS...` with `DOCKER_CONFIG` set to this machine's.
    fn kiln(&self, args: &[&str]) -> Kiln {
        let mut command = kiln()
            .root(self.root.path())
            .args(args)
            .env("DOCKER_CONFIG", self.docker_config.path());
        if let Some(prefix) = &self.path_prefix {
            let path = std::env::var("PATH").unwrap_or_default();
            command = command.env("PATH", format!("{}:{path}", prefix.display()));
        }
        command
    }

    fn store(&self) -> Store {
        Store::open(self.root.path()).expect("open store")
    }

    /// Builds a three-layer busybox image `FROM scratch` (COPY only) tagged `name`; `marker`
    /// makes its content unique.
    fn build_image(&self, busybox: &Path, name: &str, marker: &str) {
        let context = support::context(&[
            (
                "Dockerfile",
                "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\nCOPY more /more\n\
                 CMD [\"/bin/busybox\", \"cat\", \"/marker\"]\n",
            ),
            ("marker", marker),
            ("more", &"x".repeat(100_000)),
        ]);
        fs::copy(busybox, context.path().join("busybox")).expect("copy busybox");
        let dir = context.path().to_str().expect("utf-8 path");
        self.kiln(&["build", "-q", "-t", name, dir]).run().success();
    }

    /// The manifest digest, image ID and layer digests of `name` in the store.
    fn digests(&self, name: &str) -> (Digest, Digest, Vec<Digest>) {
        let image = self.store().resolve(name).expect("image in the store");
        let layers = image.layers.iter().map(|l| l.digest.clone()).collect();
        (image.manifest_digest, image.id, layers)
    }
}

/// A registry client for library-level tests.
fn client(options: ClientOptions) -> Client {
    Client::new(options).expect("client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn reference(text: &str) -> Reference {
    Reference::parse_normalized(text).expect("reference")
}

/// Root (kiln build), busybox and a plain registry, or `None` after a skip notice.
fn plain_setup() -> Option<(PathBuf, TestRegistry)> {
    support::root()?;
    let busybox = support::busybox()?;
    let registry = TestRegistry::start(Auth::Anonymous)?;
    Some((busybox, registry))
}

/// `kiln run` pulls a missing image as `docker run` does (`--pull missing`, the default), with
/// the pull's lines on stderr and the container's output alone on stdout; `--pull never`
/// refuses a missing image; `--pull always` pulls again, and runs what it pulled.
#[test]
fn run_pulls_a_missing_image_as_its_pull_policy_says() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let name = format!("{}/kiln/runpull:1", registry.host());
    let a = Machine::new();
    a.build_image(&busybox, &name, "first");
    a.kiln(&["push", &name]).run().success();

    let b = Machine::new();
    let never = b
        .kiln(&["run", "--rm", "--pull", "never", &name])
        .run()
        .failure()
        .stderr_str();
    assert!(never.contains("runpull"), "{never}");
    assert!(!never.contains("Pulling from"), "{never}");
    assert!(b.store().images().expect("images").is_empty());

    let run = b.kiln(&["run", "--rm", &name]).run().success();
    assert_eq!(run.stdout_str(), "first");
    let stderr = run.stderr_str();
    assert!(
        stderr.contains(&format!("Unable to find image '{name}' locally")), // already tagged
        "{stderr}"
    );
    assert!(stderr.contains("1: Pulling from kiln/runpull"), "{stderr}");
    assert!(stderr.contains("Status: Downloaded image for"), "{stderr}");
    assert_eq!(b.digests(&name).1, a.digests(&name).1, "the pushed image");

    // Present now: nothing is pulled.
    let again = b.kiln(&["run", "--rm", &name]).run().success();
    assert_eq!(again.stdout_str(), "first");
    assert!(
        !again.stderr_str().contains("Pulling from"),
        "{}",
        again.stderr_str()
    );

    // A new image under the same name: `missing` keeps the stored one, `always` fetches it.
    a.build_image(&busybox, &name, "second");
    a.kiln(&["push", &name]).run().success();
    let kept = b.kiln(&["run", "--rm", &name]).run().success();
    assert_eq!(kept.stdout_str(), "first");
    let always = b
        .kiln(&["run", "--rm", "--pull", "always", &name])
        .run()
        .success();
    assert_eq!(always.stdout_str(), "second");
    assert!(
        always.stderr_str().contains("Pulling from"),
        "{}",
        always.stderr_str()
    );
    assert!(
        !always.stderr_str().contains("Unable to find"),
        "{}",
        always.stderr_str()
    );
}

#[test]
fn push_then_pull_keeps_every_digest_and_skips_or_mounts_what_the_registry_has() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/kiln/round:1");
    let a = Machine::new();
    a.build_image(&busybox, &name, "round trip");
    let pushed = a.kiln(&["push", &name]).run();
    assert_eq!(pushed.status.code(), Some(0), "{}", pushed.stderr_str());
    let (manifest, id, layers) = a.digests(&name);
    assert!(
        pushed
            .stdout_str()
            .contains(&format!("1: digest: {manifest}")),
        "{}",
        pushed.stdout_str()
    );
    assert_eq!(
        pushed.stderr_str().matches(": Pushed").count(),
        layers.len() + 1,
        "{}",
        pushed.stderr_str()
    );

    let b = Machine::new();
    let pulled = b.kiln(&["pull", &name]).run().success().stdout_str();
    assert!(pulled.contains(&format!("Digest: {manifest}")), "{pulled}");
    assert_eq!(
        b.digests(&name),
        (manifest.clone(), id.clone(), layers.clone())
    );
    assert_eq!(
        b.kiln(&["run", "--rm", &name]).run().success().stdout_str(),
        "round trip"
    );
    // The registry serves exactly the store's manifest bytes.
    if let Some(skopeo) = support::tool("skopeo") {
        let raw = Command::new(skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{name}"))
            .output()
            .expect("run skopeo");
        assert!(
            raw.status.success(),
            "{}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(Digest::of(&raw.stdout), manifest);
    }

    // Again: every blob is there already; to another repository: mounted.
    let again = a.kiln(&["push", &name]).run();
    assert_eq!(again.status.code(), Some(0), "{}", again.stderr_str());
    assert_eq!(
        again.stderr_str().matches("Layer already exists").count(),
        layers.len() + 1
    );
    let other = format!("{host}/kiln/other:2");
    a.kiln(&["tag", &name, &other]).run().success();
    let mounted = a.kiln(&["push", &other]).run();
    assert_eq!(mounted.status.code(), Some(0), "{}", mounted.stderr_str());
    assert_eq!(
        mounted.stderr_str().matches("Mounted").count(),
        layers.len() + 1,
        "{}",
        mounted.stderr_str()
    );
    // A second pull of the same image downloads nothing.
    let repeat = b.kiln(&["pull", &name]).run();
    assert_eq!(
        repeat.stderr_str().matches("Already exists").count(),
        layers.len() + 1
    );
}

#[test]
fn chunked_uploads_resume_after_a_cut_connection() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let patches = Arc::new(AtomicUsize::new(0));
    let seen = patches.clone();
    // The third PATCH of the push never reaches the registry.
    let front = proxy(
        registry.port,
        Arc::new(move |method, _| {
            if method == "PATCH" && seen.fetch_add(1, Ordering::SeqCst) == 2 {
                Act::Cut
            } else {
                Act::Forward
            }
        }),
    );
    let a = Machine::new();
    a.build_image(&busybox, "chunky", "chunks");
    let target = format!("127.0.0.1:{}/kiln/chunky:1", front.port);
    let options = ClientOptions {
        chunk_size: 256 << 10,
        ..ClientOptions::default()
    };
    let digest = runtime()
        .block_on(registry::push(
            &client(options),
            &a.store(),
            "chunky",
            &reference(&target),
            &kiln::cache::remote::origins(),
            &NoProgress,
        ))
        .expect("the push completes");
    assert!(
        patches.load(Ordering::SeqCst) > 3,
        "the upload was not chunked"
    );
    // The push went gzip-compressed: the pushed tag is not in A's store, so "chunky" keeps its
    // uncompressed manifest; the image (its ID and diff IDs) is the same.
    assert_ne!(digest, a.digests("chunky").0);
    let b = Machine::new();
    b.kiln(&["pull", &format!("{}/kiln/chunky:1", registry.host())])
        .run()
        .success();
    assert_eq!(
        b.digests(&format!("{}/kiln/chunky:1", registry.host())).0,
        digest
    );
}

#[test]
fn a_push_cut_off_by_a_killed_registry_completes_after_a_restart() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let registry = Arc::new(Mutex::new(registry));
    let port = registry.lock().expect("lock").port;
    let killed = Arc::new(AtomicUsize::new(0));
    let (killer, flag) = (registry.clone(), killed.clone());
    // At the first PATCH the registry dies (SIGKILL) and the request is cut.
    let front = proxy(
        port,
        Arc::new(move |method, _| {
            if method == "PATCH" && flag.fetch_add(1, Ordering::SeqCst) == 0 {
                killer.lock().expect("lock").kill();
                Act::Cut
            } else {
                Act::Forward
            }
        }),
    );
    let a = Machine::new();
    a.build_image(&busybox, "killed", "killed mid push");
    let target = reference(&format!("127.0.0.1:{}/kiln/killed:1", front.port));
    let options = ClientOptions {
        chunk_size: 256 << 10,
        retries: 1,
        ..ClientOptions::default()
    };
    let runtime = runtime();
    let failed = runtime.block_on(registry::push(
        &client(options.clone()),
        &a.store(),
        "killed",
        &target,
        &kiln::cache::remote::origins(),
        &NoProgress,
    ));
    let message = failed.expect_err("the registry is gone").to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{}", front.port)),
        "{message}"
    );
    registry.lock().expect("lock").restart();
    let digest = runtime
        .block_on(registry::push(
            &client(options),
            &a.store(),
            "killed",
            &target,
            &kiln::cache::remote::origins(),
            &NoProgress,
        ))
        .expect("the next push completes");
    let b = Machine::new();
    let name = format!("127.0.0.1:{port}/kiln/killed:1");
    b.kiln(&["pull", &name]).run().success();
    assert_eq!(b.digests(&name).1, a.digests("killed").1, "the same image");
    assert_eq!(b.digests(&name).0, digest);
    // The proxy's thread holds the registry for good: stop the process here.
    registry.lock().expect("lock").kill();
}

#[test]
fn a_corrupted_blob_is_refused_and_leaves_the_store_unchanged() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let a = Machine::new();
    let name = format!("{}/kiln/corrupt:1", registry.host());
    a.build_image(&busybox, &name, "corrupt me");
    a.kiln(&["push", &name]).run().success();
    let (_, _, layers) = a.digests(&name);
    let victim = layers.last().expect("a layer").clone();
    let path = format!("/blobs/{victim}");
    let front = proxy(
        registry.port,
        Arc::new(move |method, p| {
            if method == "GET" && p.ends_with(&path) {
                Act::Corrupt
            } else {
                Act::Forward
            }
        }),
    );
    let b = Machine::new();
    let through_proxy = format!("127.0.0.1:{}/kiln/corrupt:1", front.port);
    let stderr = b
        .kiln(&["pull", &through_proxy])
        .run()
        .failure()
        .stderr_str();
    assert!(stderr.contains(&format!("blob {victim}")), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{}", front.port)),
        "{stderr}"
    );
    assert!(stderr.contains("does not match its digest"), "{stderr}");
    let store = b.store();
    assert!(!store.blobs().contains(&victim));
    assert!(store.images().expect("images").is_empty());
    // Nothing of the corrupt blob is kept; what may stay is the resume state of the other
    // blobs whose downloads the failure cut short (`sha256-<hex>.partial`, for the next pull).
    let junk = support::staging_junk(b.root.path(), victim.hex());
    assert!(junk.is_empty(), "staging junk was left: {junk:?}");

    // A manifest altered on the way: its bytes no longer have the digest the registry
    // announces (Docker-Content-Digest), nor the one asked for.
    let front = proxy(
        registry.port,
        Arc::new(|method, p| {
            if method == "GET" && p.contains("/manifests/") {
                Act::Corrupt
            } else {
                Act::Forward
            }
        }),
    );
    let (manifest, _, _) = a.digests(&name);
    for target in [
        format!("127.0.0.1:{}/kiln/corrupt:1", front.port),
        format!("127.0.0.1:{}/kiln/corrupt@{manifest}", front.port),
    ] {
        let stderr = b.kiln(&["pull", &target]).run().failure().stderr_str();
        assert!(stderr.contains("does not match its digest"), "{stderr}");
        assert!(stderr.contains(&format!("expected {manifest}")), "{stderr}");
    }
    assert!(b.store().images().expect("images").is_empty());
    // Only verified blobs of the image stayed (as docker keeps its downloaded layers, so a
    // retry fetches less; prune collects them), never the corrupted one.
    let wanted = a.store().blobs().list().expect("blobs");
    for blob in b.store().blobs().list().expect("blobs") {
        assert!(blob.digest != victim && wanted.contains(&blob), "{blob:?}");
    }
}

#[test]
fn downloads_resume_with_range_and_retry_after_503() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let a = Machine::new();
    let name = format!("{}/kiln/resume:1", registry.host());
    a.build_image(&busybox, &name, "resume");
    a.kiln(&["push", &name]).run().success();
    let image = a.store().resolve(&name).expect("image");
    let biggest = image
        .layers
        .iter()
        .max_by_key(|l| l.size)
        .expect("layers")
        .digest
        .clone();
    let path = format!("/blobs/{biggest}");
    let gets = Arc::new(AtomicUsize::new(0));
    let manifests = Arc::new(AtomicUsize::new(0));
    let (seen, seen_manifests) = (gets.clone(), manifests.clone());
    // The first download of the biggest layer is cut half way; the first manifest GET gets a
    // 503.
    let front = proxy(
        registry.port,
        Arc::new(move |method, p| match method {
            "GET" if p.ends_with(&path) && seen.fetch_add(1, Ordering::SeqCst) == 0 => {
                Act::Truncate
            }
            "GET"
                if p.contains("/manifests/")
                    && seen_manifests.fetch_add(1, Ordering::SeqCst) == 0 =>
            {
                Act::Unavailable
            }
            _ => Act::Forward,
        }),
    );
    let b = Machine::new();
    let target = format!("127.0.0.1:{}/kiln/resume:1", front.port);
    b.kiln(&["pull", &target]).run().success();
    assert_eq!(b.digests(&target), a.digests(&name));
    let log = front.log.lock().expect("lock").clone();
    let blob_gets: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("GET ") && l.contains(&biggest.to_string()))
        .collect();
    assert_eq!(blob_gets.len(), 2, "{log:#?}");
    assert!(blob_gets[1].contains("Range: bytes="), "{log:#?}");
    assert_eq!(manifests.load(Ordering::SeqCst), 2, "{log:#?}");
}

#[test]
fn basic_auth_login_push_pull_logout() {
    let Some(busybox) = support::root().and_then(|()| support::busybox()) else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Basic) else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/kiln/basic:1");
    let a = Machine::new();
    a.build_image(&busybox, &name, "basic");
    let stderr = a.kiln(&["push", &name]).run().failure().stderr_str();
    assert!(
        stderr.contains("unauthorized") && stderr.contains(&format!("run `kiln login {host}`")),
        "{stderr}"
    );
    let wrong = a
        .kiln(&["login", "-u", USER, "--password-stdin", &host])
        .stdin("not the password\n")
        .run()
        .failure()
        .stderr_str();
    assert!(
        wrong.contains("refused the user name or password"),
        "{wrong}"
    );
    let config = a.docker_config.path().join("config.json");
    assert!(!config.exists(), "failed login wrote credentials");
    fs::write(&config, r#"{"psFormat":"keep me","auths":{}}"#).expect("config");
    let ok = a
        .kiln(&["login", "-u", USER, "--password-stdin", &host])
        .stdin(format!("{PASSWORD}\n"))
        .run()
        .success()
        .stdout_str();
    assert_eq!(ok, "Login Succeeded\n");
    let document: Value =
        serde_json::from_slice(&fs::read(&config).expect("config")).expect("json");
    assert_eq!(document["psFormat"], "keep me");
    assert_eq!(
        document["auths"][&host]["auth"],
        STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&config).expect("config").permissions().mode() & 0o777,
        0o600
    );
    a.kiln(&["push", &name]).run().success();

    let b = Machine::new();
    let stderr = b.kiln(&["pull", &name]).run().failure().stderr_str();
    assert!(
        stderr.contains(&format!("run `kiln login {host}`")),
        "{stderr}"
    );
    fs::copy(&config, b.docker_config.path().join("config.json")).expect("copy config");
    b.kiln(&["pull", &name]).run().success();
    assert_eq!(b.digests(&name), a.digests(&name));

    assert_eq!(
        a.kiln(&["logout", &host]).run().success().stdout_str(),
        format!("Removing login credentials for {host}\n")
    );
    let document: Value =
        serde_json::from_slice(&fs::read(&config).expect("config")).expect("json");
    assert_eq!(document["psFormat"], "keep me");
    assert!(document["auths"].get(&host).is_none());
    a.kiln(&["push", &name]).run().failure().stderr_str();
}

#[test]
fn credentials_go_through_the_configured_credential_helper() {
    let Some(registry) = TestRegistry::start(Auth::Basic) else {
        return;
    };
    let host = registry.host();
    let mut a = Machine::new();
    // A helper that keeps one secret in a file beside it (docker-credential-helpers' protocol:
    // the server on stdin for get and erase, JSON for store).
    let bin = tempfile::tempdir().expect("temp dir");
    let vault = bin.path().join("vault.json");
    let script = format!(
        "#!/bin/sh\nvault={vault}\ncase \"$1\" in\n\
         store) cat > \"$vault\" ;;\n\
         get) read server; if [ -f \"$vault\" ]; then cat \"$vault\"; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n\
         erase) read server; rm -f \"$vault\" ;;\n\
         esac\n",
        vault = vault.display()
    );
    let helper = bin.path().join("docker-credential-fake");
    fs::write(&helper, script).expect("helper");
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).expect("chmod");
    a.path_prefix = Some(bin.path().to_path_buf());
    let config = a.docker_config.path().join("config.json");
    fs::write(&config, r#"{"credsStore":"fake"}"#).expect("config");

    a.kiln(&["login", "-u", USER, "--password-stdin", &host])
        .stdin(format!("{PASSWORD}\n"))
        .run()
        .success();
    let stored: Value = serde_json::from_slice(&fs::read(&vault).expect("vault")).expect("json");
    assert_eq!(
        stored,
        json!({"ServerURL": host, "Username": USER, "Secret": PASSWORD})
    );
    let document: Value =
        serde_json::from_slice(&fs::read(&config).expect("config")).expect("json");
    assert_eq!(
        document["auths"][&host],
        json!({}),
        "no secret in config.json"
    );
    assert_eq!(document["credsStore"], "fake");

    // The client finds the credentials through the helper (PATH is the test's own here).
    let options = ClientOptions {
        docker_config_dir: Some(a.docker_config.path().to_path_buf()),
        ..ClientOptions::default()
    };
    // This process's PATH lacks the helper: the lookup fails with a message naming it.
    let err = runtime()
        .block_on(client(options).check_login(&host))
        .expect_err("the helper is not on PATH");
    assert!(err.to_string().contains("docker-credential-fake"), "{err}");
    a.kiln(&["logout", &host]).run().success();
    assert!(!vault.exists(), "logout did not erase the helper's secret");
}

#[test]
fn bearer_tokens_from_a_token_server() {
    let Some(busybox) = support::root().and_then(|()| support::busybox()) else {
        return;
    };
    let Some(tokens) = TokenServer::start() else {
        return;
    };
    let Some(registry) = TestRegistry::start(Auth::Token(tokens.clone())) else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/kiln/token:1");
    let a = Machine::new();
    a.build_image(&busybox, &name, "token");
    let stderr = a.kiln(&["push", &name]).run().failure().stderr_str();
    assert!(
        stderr.contains(&format!("run `kiln login {host}`")),
        "{stderr}"
    );
    assert!(stderr.contains("wants credentials"), "{stderr}");
    a.kiln(&["login", "-u", USER, "--password-stdin", &host])
        .stdin(format!("{PASSWORD}\n"))
        .run()
        .success();
    let before = tokens.requests.lock().expect("lock").len();
    a.kiln(&["push", &name]).run().success();
    let requests = tokens.requests.lock().expect("lock")[before..].to_vec();
    assert!(
        requests
            .iter()
            .any(|q| q.contains("scope=repository%3Akiln%2Ftoken%3Apull%2Cpush")),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|q| q.contains("service=kiln-test-registry"))
    );
    // Cached per scope: far fewer token requests than blobs and manifests moved.
    assert!(requests.len() <= 2, "{requests:?}");
    let b = Machine::new();
    fs::copy(
        a.docker_config.path().join("config.json"),
        b.docker_config.path().join("config.json"),
    )
    .expect("copy config");
    b.kiln(&["pull", &name]).run().success();
    assert_eq!(b.digests(&name), a.digests(&name));
}

#[test]
fn pull_chooses_the_platform_from_an_index() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let host = registry.host();
    let a = Machine::new();
    let (amd, arm) = (
        format!("{host}/kiln/multi:amd"),
        format!("{host}/kiln/multi:arm"),
    );
    a.build_image(&busybox, &amd, "amd64 image");
    a.build_image(&busybox, &arm, "arm64 image");
    a.kiln(&["push", &amd]).run().success();
    a.kiln(&["push", &arm]).run().success();
    let entry = |name: &str, arch: &str, variant: Option<&str>| {
        let image = a.store().resolve(name).expect("image");
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(variant) = variant {
            platform["variant"] = json!(variant);
        }
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest.to_string(),
            "size": image.manifest_descriptor.size(),
            "platform": platform,
        })
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&amd, "amd64", None), entry(&arm, "arm64", Some("v8"))],
    })
    .to_string();
    let repo = registry::Repository::of(&reference(&format!("{host}/kiln/multi")));
    runtime()
        .block_on(client(ClientOptions::default()).put_manifest(
            &repo,
            "both",
            "application/vnd.oci.image.index.v1+json",
            index.as_bytes(),
        ))
        .expect("push the index");
    let all = format!("{host}/kiln/multi:both");
    for (platform, expected) in [("linux/arm64", &arm), ("linux/amd64", &amd)] {
        let b = Machine::new();
        b.kiln(&["pull", "--platform", platform, &all])
            .run()
            .success();
        assert_eq!(b.digests(&all), a.digests(expected), "{platform}");
    }
    let stderr = Machine::new()
        .kiln(&["pull", "--platform", "linux/s390x", &all])
        .run()
        .failure()
        .stderr_str();
    assert!(
        stderr.contains("no image for platform linux/s390x (it has: linux/amd64, linux/arm64/v8)"),
        "{stderr}"
    );
}

#[test]
fn the_registry_cache_transport_round_trips_a_cache_manifest_and_its_blobs() {
    let Some(registry) = TestRegistry::start(Auth::Anonymous) else {
        return;
    };
    let target = reference(&format!("{}/kiln/cache:main", registry.host()));
    let cache = RegistryCache::new(client(ClientOptions::default()), target).expect("cache");
    assert_eq!(
        cache.describe(),
        format!("registry {}/kiln/cache:main", registry.host())
    );
    assert_eq!(cache.read_manifest().expect("read"), None);

    let here = tempfile::tempdir().expect("temp dir");
    let blobs = BlobStore::open(here.path()).expect("blob store");
    let layer = blobs.write(&b"cached layer".repeat(1000)).expect("layer");
    let graph = blobs.write(br#"{"kiln":"cache graph"}"#).expect("graph");
    assert!(!cache.has_blob(&layer.digest).expect("head"));
    for blob in [&layer, &graph] {
        cache
            .push_blob(&blob.digest, blob.size, &blobs)
            .expect("push");
        assert!(cache.has_blob(&blob.digest).expect("head"));
    }
    // Pushing again skips it.
    cache
        .push_blob(&layer.digest, layer.size, &blobs)
        .expect("push again");
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.kiln.cache.v1",
        "config": {"mediaType": "application/vnd.kiln.cache.graph.v1+json",
                   "digest": graph.digest.to_string(), "size": graph.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer.digest.to_string(), "size": layer.size}],
    })
    .to_string();
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    cache
        .write_manifest(media_type, manifest.as_bytes())
        .expect("write manifest");
    assert_eq!(
        cache.read_manifest().expect("read"),
        Some((media_type.to_string(), manifest.clone().into_bytes()))
    );

    let there = tempfile::tempdir().expect("temp dir");
    let other = BlobStore::open(there.path()).expect("blob store");
    // From a thread of its own, as the builder's blocking pool calls it.
    let fetched = std::thread::scope(|scope| {
        scope
            .spawn(|| cache.fetch_blob(&layer.digest, layer.size, &other))
            .join()
            .expect("thread")
    })
    .expect("fetch");
    assert_eq!(fetched, layer);
    assert!(other.contains(&layer.digest));
    // A size that is not the blob's: an error, and nothing enters the store.
    let err = cache
        .fetch_blob(&graph.digest, graph.size + 1, &other)
        .expect_err("wrong size");
    assert!(err.to_string().contains(&graph.digest.to_string()), "{err}");
    assert!(!other.contains(&graph.digest));
}

/// The peer dockerd pulls and runs what kiln pushed (and skopeo inspects it); kiln builds
/// FROM what the peer docker pushed.
#[test]
fn kiln_and_the_peer_docker_read_each_others_pushes() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let Some(docker) = support::peer_docker() else {
        return;
    };
    let Some(skopeo) = support::tool("skopeo") else {
        return;
    };
    let host = registry.host();
    let name = format!("{host}/kiln/to-docker:1");
    let a = Machine::new();
    a.build_image(&busybox, &name, "hello from kiln");
    a.kiln(&["push", &name]).run().success();
    let (manifest, id, layers) = a.digests(&name);

    let inspect = Command::new(&skopeo)
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .expect("run skopeo");
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let inspected: Value = serde_json::from_slice(&inspect.stdout).expect("skopeo json");
    assert_eq!(inspected["Digest"], manifest.to_string());
    let listed: Vec<String> = inspected["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        listed,
        layers.iter().map(ToString::to_string).collect::<Vec<_>>()
    );

    docker.run(&["pull", &name]);
    let ran = docker.run(&["run", "--rm", "--network", "none", &name]);
    assert_eq!(ran, "hello from kiln");
    let docker_id = docker.run(&["image", "inspect", "--format", "{{.Id}}", &name]);
    assert_eq!(docker_id.trim(), id.to_string());

    // docker builds on it and pushes; kiln builds FROM docker's image.
    let from_docker = format!("{host}/peer/made-by-docker:1");
    let context = support::context(&[
        ("Dockerfile", &format!("FROM {name}\nCOPY extra /extra\n")),
        ("extra", "added by docker"),
    ]);
    docker.run(&[
        "build",
        "-q",
        "-t",
        &from_docker,
        context.path().to_str().expect("utf-8 path"),
    ]);
    docker.run(&["push", &from_docker]);
    docker.run(&["rmi", &from_docker, &name]);
    let c = Machine::new();
    let kiln_context = support::context(&[(
        "Dockerfile",
        &format!("FROM {from_docker}\nCMD [\"/bin/busybox\", \"cat\", \"/extra\"]\n"),
    )]);
    c.kiln(&[
        "build",
        "-q",
        "-t",
        "on-docker",
        kiln_context.path().to_str().expect("utf-8 path"),
    ])
    .run()
    .success();
    assert_eq!(
        c.kiln(&["run", "--rm", "on-docker"])
            .run()
            .success()
            .stdout_str(),
        "added by docker"
    );
    // The pulled base kept the manifest digest the registry serves for docker's push.
    let base = c
        .store()
        .resolve(&from_docker)
        .expect("the base was pulled");
    let served = Command::new(&skopeo)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{from_docker}"))
        .output()
        .expect("skopeo");
    assert_eq!(Digest::of(&served.stdout), base.manifest_digest);
}

#[test]
fn build_pulls_missing_bases_refreshes_with_pull_and_pushes_with_push_or_output() {
    let Some((busybox, registry)) = plain_setup() else {
        return;
    };
    let host = registry.host();
    let base = format!("{host}/kiln/base:1");
    let publisher = Machine::new();
    publisher.build_image(&busybox, &base, "first base");
    publisher.kiln(&["push", &base]).run().success();

    let builder = Machine::new();
    let context = support::context(&[(
        "Dockerfile",
        &format!("FROM {base}\nCMD [\"/bin/busybox\", \"cat\", \"/marker\"]\n"),
    )]);
    let dir = context.path().to_str().expect("utf-8 path");
    let built = format!("{host}/kiln/built:1");
    let exported = format!("{host}/kiln/exported:2");
    let output = format!("type=registry,name={exported}");
    builder
        .kiln(&["build", "-q", "--push", "-t", &built, "-o", &output, dir])
        .run()
        .success();
    assert_eq!(
        builder
            .kiln(&["run", "--rm", &built])
            .run()
            .success()
            .stdout_str(),
        "first base"
    );
    let (manifest, id, layers) = builder.digests(&built);
    let reader = Machine::new();
    for name in [&built, &exported] {
        reader.kiln(&["pull", name]).run().success();
        assert_eq!(
            reader.digests(name),
            (manifest.clone(), id.clone(), layers.clone())
        );
    }

    // The base's tag moves: without --pull the stored base is used, with --pull the new one.
    publisher.build_image(&busybox, &base, "second base");
    publisher.kiln(&["push", &base]).run().success();
    builder
        .kiln(&["build", "-q", "-t", "again", dir])
        .run()
        .success();
    assert_eq!(
        builder
            .kiln(&["run", "--rm", "again"])
            .run()
            .success()
            .stdout_str(),
        "first base"
    );
    let pulled = builder
        .kiln(&["build", "--progress", "plain", "--pull", "-t", "again", dir])
        .run();
    assert_eq!(pulled.status.code(), Some(0), "{}", pulled.stderr_str());
    let progress = pulled.stderr_str();
    // The pull is shown as a phase of the build: what is pulled, then the manifest digest and
    // how many blobs came down.
    let pulling_at = progress
        .find(&format!("pulling {base}"))
        .unwrap_or_else(|| panic!("no pulling phase:\n{progress}"));
    assert!(
        progress[pulling_at..].contains(": ")
            && progress[pulling_at..].contains(" blobs downloaded"),
        "no pulled line after the pulling phase:\n{progress}"
    );
    assert_eq!(
        builder
            .kiln(&["run", "--rm", "again"])
            .run()
            .success()
            .stdout_str(),
        "second base"
    );

    let stderr = builder
        .kiln(&["build", "-q", "--push", dir])
        .run()
        .failure()
        .stderr_str();
    assert!(stderr.contains("--push needs a name"), "{stderr}");
    let missing = support::context(&[("Dockerfile", &format!("FROM {host}/kiln/nothing:1\n"))]);
    let stderr = builder
        .kiln(&["build", "-q", missing.path().to_str().expect("utf-8 path")])
        .run()
        .failure()
        .stderr_str();
    assert!(
        stderr.contains(&format!("cannot pull {host}/kiln/nothing:1"))
            && stderr.contains("not found"),
        "{stderr}"
    );
}
