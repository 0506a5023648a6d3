//! Content digests (`sha256:<64 hex>`), the identity of every blob, layer and image in kiln.
//!
//! Only sha256 is accepted: it is what the OCI image spec requires implementations to support and
//! what every registry and Docker use. A digest string from outside (an index, a manifest, an
//! archive, a command line) is parsed into [`Digest`] before it is used in a path, so a hostile
//! "digest" such as `sha256:../../etc` can never name a file outside `blobs/sha256/`.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// A sha256 content digest. Displays as `sha256:<hex>`; [`Digest::hex`] is the bare hex part.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    /// 64 lower-case hex characters (validated on construction).
    hex: String,
}

/// A string that is not a `sha256:<64 lower-case hex>` digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {text:?}: {reason}")]
pub struct DigestError {
    /// The rejected text (truncated to 100 characters).
    pub text: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        Digest::from_hasher(hasher)
    }

    /// Parses `sha256:<64 hex>`. Upper-case hex is rejected, as the OCI spec's digest grammar does.
    pub fn parse(text: &str) -> Result<Digest, DigestError> {
        let fail = |reason| DigestError {
            text: text.chars().take(100).collect(),
            reason,
        };
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(fail("expected ALGORITHM:HEX, such as sha256:e3b0c442..."));
        };
        if algorithm != "sha256" {
            return Err(fail("only sha256 digests are supported"));
        }
        Digest::from_hex(hex).map_err(|_| fail("a sha256 digest has 64 lower-case hex characters"))
    }

    /// Parses a bare 64-character lower-case hex string (as in a `blobs/sha256/<hex>` file name).
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(DigestError {
                text: hex.chars().take(100).collect(),
                reason: "a sha256 digest has 64 lower-case hex characters",
            })
        }
    }

    /// The 64 hex characters, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters: the short image ID that `docker images` shows.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    /// The algorithm name; always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    fn from_hasher(hasher: Sha256) -> Digest {
        let bytes = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in bytes.iter() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        Digest { hex }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Digest, DigestError> {
        Digest::parse(text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Hashes everything written through it (or read through it) while passing the bytes on, so a
/// stream is digested in the same pass that stores or unpacks it.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    /// Wraps a reader or writer.
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The number of bytes that went through so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of everything that went through, and the wrapped value.
    pub fn finish(self) -> (Digest, u64, T) {
        (Digest::from_hasher(self.hasher), self.bytes, self.inner)
    }

    /// The wrapped value, by reference.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped value, mutably (bytes written or read directly on it are not hashed).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
        let mut hashing = Hashing::new(Vec::new());
        hashing.write_all(b"").unwrap();
        assert_eq!(hashing.finish().0.to_string(), EMPTY);
    }

    #[test]
    fn hashing_reader_and_writer_agree_with_digest_of() {
        let data = b"kiln layer bytes".repeat(1000);
        let mut reader = Hashing::new(&data[..]);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (digest, bytes, _) = reader.finish();
        assert_eq!(digest, Digest::of(&data));
        assert_eq!(bytes, data.len() as u64);
    }

    #[test]
    fn parse_accepts_only_sha256_with_64_lower_hex() {
        assert_eq!(Digest::parse(EMPTY).unwrap().to_string(), EMPTY);
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/..",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let digest = Digest::of(b"x");
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn short_is_twelve_characters() {
        assert_eq!(Digest::parse(EMPTY).unwrap().short(), "e3b0c44298fc");
    }
}
