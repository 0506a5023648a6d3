//! A tiny HTTP/1.1 server on a free loopback port, for the tests of what kiln downloads
//! (`ADD <url>`, contexts from URLs): each path answers with a [`Resource`] the test sets, and
//! the server logs what it was asked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server answers for a path.
#[derive(Clone, Default)]
pub struct Resource {
    pub body: Vec<u8>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub content_disposition: Option<String>,
    /// Send the full `Content-Length` but only this many bytes, then close.
    pub cut_after: Option<usize>,
    /// Send this many bytes of the body, then hold the connection open and silent for the
    /// duration before closing it (a server that stalls).
    pub stall_after: Option<(usize, std::time::Duration)>,
    /// The exact `Authorization` value the path needs; any other (or none) gets a `401`.
    pub authorization: Option<String>,
    /// Answer `302 Found` to this location instead of the body.
    pub redirect: Option<String>,
}

impl Resource {
    /// A body with nothing else set.
    pub fn body(body: impl Into<Vec<u8>>) -> Resource {
        Resource {
            body: body.into(),
            ..Resource::default()
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
}

/// What the server saw.
#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    /// How many responses carried a body (complete or cut).
    bodies: usize,
}

/// The server; it runs until the test process ends.
pub struct Server {
    port: u16,
    resources: Arc<Mutex<HashMap<String, Resource>>>,
    log: Arc<Mutex<Log>>,
}

impl Server {
    /// Starts serving on `127.0.0.1` (one request per connection, each on its own thread).
    pub fn start() -> Server {
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

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn set(&self, path: &str, resource: Resource) {
        self.resources
            .lock()
            .unwrap()
            .insert(path.to_string(), resource);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().requests.clone()
    }

    /// How many responses carried a body.
    pub fn bodies(&self) -> usize {
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
    let (mut if_none_match, mut authorization) = (None, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(value.trim().to_string());
            } else if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    log.lock().unwrap().requests.push(Request {
        path: path.clone(),
        if_none_match: if_none_match.clone(),
        authorization: authorization.clone(),
    });
    // A path set with its query is served for exactly that; else the query is ignored.
    let resource = {
        let resources = resources.lock().unwrap();
        resources
            .get(&path)
            .or_else(|| resources.get(path.split('?').next().unwrap_or_default()))
            .cloned()
    };
    let mut out = stream;
    let answer = |out: &mut TcpStream, status: &str, head: &str| {
        let _ = out.write_all(
            format!("HTTP/1.1 {status}\r\n{head}Content-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    };
    let Some(resource) = resource else {
        answer(&mut out, "404 Not Found", "");
        return;
    };
    if resource.authorization.is_some() && resource.authorization != authorization {
        answer(
            &mut out,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"test\"\r\n",
        );
        return;
    }
    if let Some(location) = &resource.redirect {
        answer(&mut out, "302 Found", &format!("Location: {location}\r\n"));
        return;
    }
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
    if let Some((sent, stall)) = resource.stall_after {
        let _ = out.write_all(&resource.body[..sent.min(resource.body.len())]);
        let _ = out.flush();
        std::thread::sleep(stall);
        let _ = out.shutdown(Shutdown::Both);
        return;
    }
    let sent = resource.cut_after.unwrap_or(resource.body.len());
    let _ = out.write_all(&resource.body[..sent]);
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}
