//! Attestation manifests follow their image into another format. An index converted for a push
//! or an archive ([`Store::index_with`]) gets new image manifests (other layer blobs, other
//! media types), so an attestation manifest about one of them (`vnd.docker.reference.digest`)
//! would name a manifest that is not exported. BuildKit's image exporter compresses first and
//! writes the attestations about the final manifest (`exporter/containerimage/writer.go`); the
//! store does the same after the fact: the in-toto statements' subjects, the manifest's
//! `subject` and the index annotation are made to name the converted manifest. Only the
//! statements' `subject` changes (the SBOM or provenance stays byte for byte), and the statements
//! stay uncompressed `application/vnd.in-toto+json` layers whatever the export's compression.
//!
//! The rewritten documents are ordinary blobs, as converted manifests are: the same conversion
//! writes the same bytes, so a second export finds them stored.

use super::{Store, StoreError, descriptor_digest};
use crate::error::{Cause, Reason};
use crate::oci::Digest;
use crate::oci::media_type::IN_TOTO;
use crate::store::BlobError;
use oci_spec::image::Descriptor;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::io::Read;

/// Larger statements are not rewritten (an SBOM of a large image is a few megabytes).
const MAX_STATEMENT_SIZE: u64 = 256 << 20;

/// An in-toto statement's `subject`, as it is in the statement's bytes.
#[derive(Deserialize)]
struct Subjects<'a> {
    #[serde(borrow)]
    subject: &'a RawValue,
}

/// `statement` (in-toto JSON) with the digest `old` replaced by `new` in its `subject` (each
/// subject's `digest.sha256`, and a package URL's `digest=` qualifier that carries it); every
/// other byte as it was. `None` when its subjects do not name `old`.
pub(super) fn statement_about(
    statement: &[u8],
    old: &Digest,
    new: &Digest,
) -> Result<Option<Vec<u8>>, Cause> {
    let text = std::str::from_utf8(statement)
        .map_err(|err| Reason::caused_by("the statement is not UTF-8", err))?;
    let subjects: Subjects<'_> = serde_json::from_str(text)
        .map_err(|err| Reason::caused_by("the statement has no valid subject list", err))?;
    let subject: Value = serde_json::from_str(subjects.subject.get())
        .map_err(|err| Reason::caused_by("the statement's subject is not valid", err))?;
    let names_old = subject.as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| {
            s.pointer(&format!("/digest/{}", old.algorithm())) == Some(&Value::from(old.hex()))
        })
    });
    if !names_old || old.algorithm() != new.algorithm() {
        return Ok(None);
    }
    // The raw subject is a slice of `text`: its position there is where the bytes change. The
    // old and new digests are as long as each other, so nothing else moves.
    let start = subjects.subject.get().as_ptr() as usize - text.as_ptr() as usize;
    let end = start + subjects.subject.get().len();
    let (old_hex, new_hex) = (old.hex().as_bytes(), new.hex().as_bytes());
    let mut rewritten = statement.to_vec();
    let span = &mut rewritten[start..end];
    let mut at = 0;
    while let Some(found) = span[at..]
        .windows(old_hex.len())
        .position(|window| window == old_hex)
    {
        span[at + found..at + found + new_hex.len()].copy_from_slice(new_hex);
        at += found + new_hex.len();
    }
    Ok(Some(rewritten))
}

impl Store {
    /// The attestation manifest `attestation` (an index entry) about the image manifest `old`,
    /// made about `converted` (that image in another format): its statements about `old` as new
    /// blobs about `converted`, its `subject` `converted`. Returns the new manifest's
    /// descriptor (media type and annotations of `attestation`, the annotation naming the image
    /// updated by the caller, which edits the index entry).
    pub(super) fn attestation_about(
        &self,
        attestation: &Descriptor,
        old: &Digest,
        converted: &Descriptor,
    ) -> Result<Descriptor, StoreError> {
        let digest = descriptor_digest("attestation manifest", old, attestation)?;
        let invalid = |source: Cause| StoreError::Document {
            what: "attestation manifest",
            digest: digest.clone(),
            source,
        };
        let new = descriptor_digest("manifest", old, converted)?;
        let bytes = self.blobs.read_sized(&digest, attestation.size())?;
        let mut manifest: Value =
            serde_json::from_slice(&bytes).map_err(|err| invalid(err.into()))?;
        if let Some(layers) = manifest.get_mut("layers").and_then(Value::as_array_mut) {
            for layer in layers {
                if layer.get("mediaType").and_then(Value::as_str) != Some(IN_TOTO) {
                    continue;
                }
                let listed: Descriptor = serde_json::from_value(layer.clone()).map_err(|err| {
                    invalid(Reason::caused_by("a layer is not valid", err).into())
                })?;
                let statement_digest = descriptor_digest("in-toto statement", &digest, &listed)?;
                let statement = self.statement(&statement_digest, listed.size())?;
                let rewritten = statement_about(&statement, old, &new).map_err(|source| {
                    StoreError::Document {
                        what: "in-toto statement",
                        digest: statement_digest.clone(),
                        source,
                    }
                })?;
                if let Some(rewritten) = rewritten {
                    let blob = self.blobs.write(&rewritten)?;
                    layer["digest"] = Value::from(blob.digest.to_string());
                    layer["size"] = Value::from(blob.size);
                }
            }
        }
        let subject_is_old = manifest
            .pointer("/subject/digest")
            .and_then(Value::as_str)
            .is_some_and(|d| d == old.to_string());
        if subject_is_old {
            manifest["subject"]["mediaType"] = Value::from(converted.media_type().to_string());
            manifest["subject"]["digest"] = Value::from(new.to_string());
            manifest["subject"]["size"] = Value::from(converted.size());
        }
        // Indented as BuildKit (Go's `json.MarshalIndent`) and a kiln build write it.
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|err| invalid(err.into()))?;
        let blob = self.blobs.write(&bytes)?;
        let mut descriptor = blob.descriptor(attestation.media_type().clone());
        descriptor.set_annotations(attestation.annotations().clone());
        descriptor.set_platform(attestation.platform().clone());
        Ok(descriptor)
    }

    /// An in-toto statement blob, whole (bounded by [`MAX_STATEMENT_SIZE`]) and verified.
    fn statement(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, StoreError> {
        if size > MAX_STATEMENT_SIZE {
            return Err(BlobError::TooLarge {
                digest: digest.clone(),
                size,
                limit: MAX_STATEMENT_SIZE,
            }
            .into());
        }
        let mut bytes = Vec::new();
        self.blobs
            .reader(digest, Some(size))?
            .take(MAX_STATEMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| match err.downcast::<BlobError>() {
                Ok(blob) => StoreError::Blob(blob),
                Err(err) => crate::sys::FsError::new("read", &self.blobs.path(digest), err).into(),
            })?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_subject_of_a_statement_changes() {
        let old = Digest::of(b"old manifest");
        let new = Digest::of(b"new manifest");
        // Go's encoder's escapes and field order, and the old digest in the predicate too: a
        // parse and serialise would change them.
        let statement = format!(
            "{{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[{{\"name\":\
             \"pkg:docker/app?digest=sha256%3A{old_hex}\\u0026platform=linux%2Famd64\",\
             \"digest\":{{\"sha256\":\"{old_hex}\"}}}}],\"predicateType\":\"x\",\
             \"predicate\":{{\"note\":\"a \\u003cb\\u003e {old_hex}\"}}}}",
            old_hex = old.hex()
        );
        let rewritten = statement_about(statement.as_bytes(), &old, &new)
            .unwrap()
            .expect("about old");
        let expected = statement.replacen(old.hex(), new.hex(), 2);
        assert_eq!(String::from_utf8(rewritten).unwrap(), expected);
        assert!(expected.ends_with(&format!("{}\"}}}}", old.hex())));

        let other = Digest::of(b"another image");
        assert_eq!(
            statement_about(statement.as_bytes(), &other, &new).unwrap(),
            None
        );
        let error = statement_about(b"{\"predicate\":{}}", &old, &new).unwrap_err();
        assert!(
            error.to_string().contains("no valid subject list"),
            "{error}"
        );
    }
}
