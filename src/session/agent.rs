//! kiln's in-process ssh-agent: serves the keys of `--ssh id=KEYFILE` on a unix socket, as
//! BuildKit's `sshprovider` serves them with Go's `agent.NewKeyring` and `agent.ServeAgent`.
//!
//! The protocol is draft-miller-ssh-agent: each message is a `uint32` length and that many bytes,
//! the first of which is the message type. kiln answers two requests, the two a client needs to
//! authenticate, and refuses the rest, so a build can neither add, remove nor lock keys (what
//! BuildKit's `readOnlyAgent` refuses too):
//!
//! - `SSH_AGENTC_REQUEST_IDENTITIES` → `SSH_AGENT_IDENTITIES_ANSWER` (each key's blob, comment);
//! - `SSH_AGENTC_SIGN_REQUEST` → `SSH_AGENT_SIGN_RESPONSE`. For RSA the flags pick the hash:
//!   `SSH_AGENT_RSA_SHA2_256` first, then `SSH_AGENT_RSA_SHA2_512` (OpenSSH's `ssh-agent` order);
//!   a request with neither asks for a SHA-1 `ssh-rsa` signature, which kiln does not make
//!   (OpenSSH clients since 7.2 ask for rsa-sha2), so it gets `SSH_AGENT_FAILURE`;
//! - anything else → `SSH_AGENT_FAILURE`.
//!
//! A message longer than [`MAX_MESSAGE`] (256 KiB, OpenSSH's `AGENT_MAX_LEN`) or empty closes the
//! connection before anything is allocated for it. Each connection has a thread, at most
//! [`MAX_CONNECTIONS`] at once. Nothing here logs, and no error carries key material.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rsa::signature::{SignatureEncoding, Signer};
use ssh_encoding::Encode;
use ssh_key::private::KeypairData;
use ssh_key::{Algorithm, HashAlg, PrivateKey, Signature};

use crate::error::{Cause, Reason};

/// The longest message kiln's agent reads: OpenSSH's `AGENT_MAX_LEN` (256 KiB).
pub(super) const MAX_MESSAGE: usize = 256 * 1024;

/// The most connections served at once; one more is closed as it is accepted.
pub(super) const MAX_CONNECTIONS: usize = 64;

const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
const SSH_AGENT_SIGN_RESPONSE: u8 = 14;
const SSH_AGENT_RSA_SHA2_256: u32 = 2;
const SSH_AGENT_RSA_SHA2_512: u32 = 4;

/// The keys an agent serves.
pub(super) struct Keyring {
    keys: Vec<AgentKey>,
}

/// A decrypted private key ready to sign, with its public key blob (what a sign request names)
/// and comment.
pub(super) struct AgentKey {
    blob: Vec<u8>,
    comment: String,
    signer: KeySigner,
}

enum KeySigner {
    /// ssh-key 0.6.7 builds its RSA signing key from the wrong primes (p twice), so kiln builds
    /// the `rsa` crate's key from the components itself, once, when the key is loaded: one
    /// signing key per hash a client can ask for.
    Rsa {
        sha256: Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>,
        sha512: Box<rsa::pkcs1v15::SigningKey<sha2::Sha512>>,
    },
    /// Ed25519 and ECDSA, signed by ssh-key.
    Other(Box<PrivateKey>),
}

impl AgentKey {
    /// A decrypted private key, checked to be one kiln's agent can sign with.
    pub(super) fn new(key: PrivateKey) -> Result<AgentKey, Cause> {
        let blob = key.public_key().to_bytes()?;
        let comment = key.comment().to_string();
        let signer = match key.key_data() {
            KeypairData::Rsa(keypair) => {
                let uint = |m: &ssh_key::Mpint| {
                    m.as_positive_bytes()
                        .map(rsa::BigUint::from_bytes_be)
                        .ok_or("an RSA key component is not a positive integer")
                };
                let private = rsa::RsaPrivateKey::from_components(
                    uint(&keypair.public.n)?,
                    uint(&keypair.public.e)?,
                    uint(&keypair.private.d)?,
                    vec![uint(&keypair.private.p)?, uint(&keypair.private.q)?],
                )
                .map_err(|e| Reason::caused_by("the RSA key is not valid", e))?;
                KeySigner::Rsa {
                    sha256: Box::new(rsa::pkcs1v15::SigningKey::new(private.clone())),
                    sha512: Box::new(rsa::pkcs1v15::SigningKey::new(private)),
                }
            }
            KeypairData::Ed25519(_) | KeypairData::Ecdsa(_) => KeySigner::Other(Box::new(key)),
            other => {
                let kind = other
                    .algorithm()
                    .map_or_else(|_| "this kind of".to_string(), |a| a.to_string());
                return Err(
                    format!("{kind} keys are not supported (ed25519, ecdsa and rsa are)").into(),
                );
            }
        };
        Ok(AgentKey {
            blob,
            comment,
            signer,
        })
    }

    /// The signature of `data`; `None` when it cannot be made (a SHA-1 RSA request included).
    fn sign(&self, data: &[u8], flags: u32) -> Option<Signature> {
        match &self.signer {
            KeySigner::Rsa { sha256, sha512 } => {
                let (hash, signature) = if flags & SSH_AGENT_RSA_SHA2_256 != 0 {
                    (HashAlg::Sha256, sha256.try_sign(data).ok()?)
                } else if flags & SSH_AGENT_RSA_SHA2_512 != 0 {
                    (HashAlg::Sha512, sha512.try_sign(data).ok()?)
                } else {
                    return None;
                };
                let algorithm = Algorithm::Rsa { hash: Some(hash) };
                Signature::new(algorithm, signature.to_vec()).ok()
            }
            KeySigner::Other(key) => key.try_sign(data).ok(),
        }
    }
}

impl Keyring {
    pub(super) fn new(keys: Vec<AgentKey>) -> Keyring {
        Keyring { keys }
    }

    /// The response to one request (a message's bytes, its type first).
    fn answer(&self, request: &[u8]) -> Vec<u8> {
        let answer = match request.split_first() {
            Some((&SSH_AGENTC_REQUEST_IDENTITIES, _)) => self.identities_answer(),
            Some((&SSH_AGENTC_SIGN_REQUEST, body)) => self.sign_response(body),
            _ => None,
        };
        answer.unwrap_or_else(|| vec![SSH_AGENT_FAILURE])
    }

    fn identities_answer(&self) -> Option<Vec<u8>> {
        let mut out = vec![SSH_AGENT_IDENTITIES_ANSWER];
        u32::try_from(self.keys.len()).ok()?.encode(&mut out).ok()?;
        for key in &self.keys {
            key.blob.encode(&mut out).ok()?;
            key.comment.encode(&mut out).ok()?;
        }
        Some(out)
    }

    fn sign_response(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut reader = body;
        let blob = read_string(&mut reader)?;
        let data = read_string(&mut reader)?;
        let flags = read_u32(&mut reader)?;
        let key = self.keys.iter().find(|k| k.blob == blob)?;
        let signature = key.sign(data, flags)?;
        let mut out = vec![SSH_AGENT_SIGN_RESPONSE];
        signature.encode_prefixed(&mut out).ok()?;
        Some(out)
    }
}

/// Reads an SSH `string` (a `uint32` length and that many bytes) off the front of `reader`,
/// checking the length against what is there before using it.
fn read_string<'a>(reader: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_u32(reader)?).ok()?;
    if len > reader.len() {
        return None;
    }
    let (string, rest) = reader.split_at(len);
    *reader = rest;
    Some(string)
}

fn read_u32(reader: &mut &[u8]) -> Option<u32> {
    let (bytes, rest) = reader.split_first_chunk::<4>()?;
    *reader = rest;
    Some(u32::from_be_bytes(*bytes))
}

/// Answers `stream`'s requests until it closes (`Ok`) or breaks the framing or fails (`Err`).
pub(super) fn serve(keyring: &Keyring, stream: &mut (impl Read + Write)) -> io::Result<()> {
    loop {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(err),
        }
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len == 0 || len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an agent message of {len} bytes (at most {MAX_MESSAGE})"),
            ));
        }
        let mut request = vec![0u8; len];
        stream.read_exact(&mut request)?;
        let response = keyring.answer(&request);
        let response_len = u32::try_from(response.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "an oversized response"))?;
        let mut framed = Vec::with_capacity(4 + response.len());
        framed.extend_from_slice(&response_len.to_be_bytes());
        framed.extend_from_slice(&response);
        stream.write_all(&framed)?;
    }
}

/// An agent listening on a unix socket, serving one keyring until dropped.
pub(super) struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    listener: UnixListener,
    connections: Arc<Mutex<HashMap<u64, UnixStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens at `path` (mode 0600: only kiln's user connects, and the sandbox it binds the
    /// socket into) and serves `keyring` there from a thread.
    pub(super) fn start(path: &Path, keyring: Keyring) -> io::Result<Server> {
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(HashMap::new()));
        let accept = {
            let (listener, stop) = (listener.try_clone()?, stop.clone());
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("kiln-ssh-agent".to_string())
                .spawn(move || accept_loop(&listener, &stop, &connections, Arc::new(keyring)))?
        };
        Ok(Server {
            path: path.to_path_buf(),
            stop,
            listener,
            connections,
            accept: Some(accept),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

type Connections = Mutex<HashMap<u64, UnixStream>>;

fn accept_loop(
    listener: &UnixListener,
    stop: &AtomicBool,
    connections: &Arc<Connections>,
    keyring: Arc<Keyring>,
) {
    let next_id = AtomicU64::new(0);
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue;
            }
            // Out of file descriptors or memory: wait for some to come back, without spinning.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut open = connections.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(tracked) = stream.try_clone() else {
                continue;
            };
            if open.len() >= MAX_CONNECTIONS {
                continue;
            }
            open.insert(id, tracked);
        }
        let (keyring, open) = (keyring.clone(), connections.clone());
        let spawned = std::thread::Builder::new()
            .name("kiln-ssh-agent-conn".to_string())
            .spawn(move || {
                let mut stream = stream;
                // A broken connection ends only itself; there is no one to tell.
                let _ = serve(&keyring, &mut stream);
                open.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
            });
        if spawned.is_err() {
            connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket wakes a blocked accept(2) on Linux (EINVAL).
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        // Open connections end too: their threads read EOF and exit.
        for (_, stream) in self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rsa::signature::Verifier;
    use ssh_encoding::Decode;

    /// A key of this kind: generated for the test, except RSA, which an unoptimized build takes
    /// a minute to generate: that one is a throwaway key `ssh-keygen -t rsa -b 2048` made, kept
    /// in testdata.
    pub(in crate::session) fn test_key(algorithm: Algorithm) -> PrivateKey {
        if let Algorithm::Rsa { .. } = algorithm {
            let text = include_str!("../../testdata/session/rsa-2048-test-key");
            return PrivateKey::from_openssh(text).unwrap();
        }
        PrivateKey::random(&mut ssh_key::rand_core::OsRng, algorithm).unwrap()
    }

    /// Sends one framed request over `stream` and reads one framed response.
    pub(in crate::session) fn request(stream: &mut UnixStream, message: &[u8]) -> Vec<u8> {
        let mut framed = (message.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(message);
        stream.write_all(&framed).unwrap();
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).unwrap();
        let mut response = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut response).unwrap();
        response
    }

    fn sign_request(blob: &[u8], data: &[u8], flags: u32) -> Vec<u8> {
        let mut message = vec![SSH_AGENTC_SIGN_REQUEST];
        blob.encode(&mut message).unwrap();
        data.encode(&mut message).unwrap();
        flags.encode(&mut message).unwrap();
        message
    }

    /// A served keyring and a connected client, over a socketpair.
    fn connected(keys: Vec<PrivateKey>) -> (UnixStream, std::thread::JoinHandle<io::Result<()>>) {
        let keys = keys
            .into_iter()
            .map(|k| AgentKey::new(k).unwrap())
            .collect();
        let keyring = Keyring::new(keys);
        let (client, mut server) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || serve(&keyring, &mut server));
        (client, thread)
    }

    #[test]
    fn identities_list_each_key_with_its_comment() {
        let mut key = test_key(Algorithm::Ed25519);
        key.set_comment("me@host");
        let blob = key.public_key().to_bytes().unwrap();
        let (mut client, _thread) = connected(vec![key]);
        let response = request(&mut client, &[SSH_AGENTC_REQUEST_IDENTITIES]);
        let mut reader = &response[..];
        assert_eq!(
            u8::decode(&mut reader).unwrap(),
            SSH_AGENT_IDENTITIES_ANSWER
        );
        assert_eq!(u32::decode(&mut reader).unwrap(), 1);
        assert_eq!(Vec::<u8>::decode(&mut reader).unwrap(), blob);
        assert_eq!(String::decode(&mut reader).unwrap(), "me@host");
        assert!(reader.is_empty());
    }

    fn signature_of(response: &[u8]) -> Signature {
        let mut reader = response;
        assert_eq!(u8::decode(&mut reader).unwrap(), SSH_AGENT_SIGN_RESPONSE);
        let blob = Vec::<u8>::decode(&mut reader).unwrap();
        assert!(reader.is_empty());
        Signature::decode(&mut &blob[..]).unwrap()
    }

    #[test]
    fn a_signature_verifies_with_the_public_key_for_each_kind_of_key() {
        for algorithm in [
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: ssh_key::EcdsaCurve::NistP384,
            },
        ] {
            let key = test_key(algorithm.clone());
            let public = key.public_key().clone();
            let (mut client, _thread) = connected(vec![key]);
            let blob = public.to_bytes().unwrap();
            let response = request(&mut client, &sign_request(&blob, b"session data", 0));
            let signature = signature_of(&response);
            assert_eq!(signature.algorithm(), algorithm);
            public
                .key_data()
                .verify(b"session data", &signature)
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            assert!(
                public.key_data().verify(b"other data", &signature).is_err(),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn rsa_signs_with_the_hash_the_flags_ask_for_and_refuses_sha1() {
        let key = test_key(Algorithm::Rsa { hash: None });
        let public = key.public_key().clone();
        let blob = public.to_bytes().unwrap();
        let (mut client, _thread) = connected(vec![key]);
        for (flags, hash) in [
            (SSH_AGENT_RSA_SHA2_256, HashAlg::Sha256),
            (SSH_AGENT_RSA_SHA2_512, HashAlg::Sha512),
            // Both: SHA-256 first, as OpenSSH's ssh-agent.
            (
                SSH_AGENT_RSA_SHA2_256 | SSH_AGENT_RSA_SHA2_512,
                HashAlg::Sha256,
            ),
        ] {
            let response = request(&mut client, &sign_request(&blob, b"data", flags));
            let signature = signature_of(&response);
            assert_eq!(signature.algorithm(), Algorithm::Rsa { hash: Some(hash) });
            public.key_data().verify(b"data", &signature).unwrap();
        }
        let response = request(&mut client, &sign_request(&blob, b"data", 0));
        assert_eq!(response, [SSH_AGENT_FAILURE]);
    }

    #[test]
    fn unknown_keys_and_messages_and_malformed_requests_fail() {
        let key = test_key(Algorithm::Ed25519);
        let blob = key.public_key().to_bytes().unwrap();
        let (mut client, _thread) = connected(vec![key]);
        let other = test_key(Algorithm::Ecdsa {
            curve: ssh_key::EcdsaCurve::NistP256,
        });
        let other_blob = other.public_key().to_bytes().unwrap();
        // A key the agent does not hold.
        let response = request(&mut client, &sign_request(&other_blob, b"d", 0));
        assert_eq!(response, [SSH_AGENT_FAILURE]);
        // ADD_IDENTITY (17), REMOVE_ALL_IDENTITIES (19), LOCK (22), EXTENSION (27), unknown.
        for kind in [17u8, 19, 22, 27, 200] {
            assert_eq!(request(&mut client, &[kind, 0, 0]), [SSH_AGENT_FAILURE]);
        }
        // A string length past the message's end is not believed.
        let mut lying = vec![SSH_AGENTC_SIGN_REQUEST];
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(request(&mut client, &lying), [SSH_AGENT_FAILURE]);
        // A truncated sign request.
        let truncated = &sign_request(&blob, b"d", 0)[..10];
        assert_eq!(request(&mut client, truncated), [SSH_AGENT_FAILURE]);
        // The connection still works after all of that.
        let response = request(&mut client, &sign_request(&blob, b"d", 0));
        assert_eq!(response[0], SSH_AGENT_SIGN_RESPONSE);
    }

    #[test]
    fn an_oversized_message_closes_the_connection() {
        let (mut client, thread) = connected(vec![test_key(Algorithm::Ed25519)]);
        // Only the length is sent: the agent must not wait for (or allocate) 4 GiB.
        client.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let err = thread.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        // One byte over the bound is refused too; the bound itself is not.
        let (mut client, thread) = connected(vec![]);
        client
            .write_all(&((MAX_MESSAGE + 1) as u32).to_be_bytes())
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(thread.join().unwrap().is_err());
        let (mut client, _thread) = connected(vec![]);
        let mut biggest = vec![0u8; MAX_MESSAGE];
        biggest[0] = 99;
        assert_eq!(request(&mut client, &biggest), [SSH_AGENT_FAILURE]);
    }

    #[test]
    fn a_server_serves_on_its_socket_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let server = Server::start(
            &path,
            Keyring::new(vec![AgentKey::new(test_key(Algorithm::Ed25519)).unwrap()]),
        )
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut first = UnixStream::connect(&path).unwrap();
        let mut second = UnixStream::connect(&path).unwrap();
        for client in [&mut first, &mut second] {
            let response = request(client, &[SSH_AGENTC_REQUEST_IDENTITIES]);
            assert_eq!(response[0], SSH_AGENT_IDENTITIES_ANSWER);
        }
        drop(server);
        // The socket is gone and open connections are closed.
        assert!(!path.exists());
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
