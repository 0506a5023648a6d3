//! The media types of the documents that name images (image-spec `media-types.md` and docker's
//! distribution schema 2). Layer media types belong to [`crate::layer::Compression`], which maps
//! them to a decompressor; the shared cache's own types to `cache::remote::format`.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (a multi-platform image).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// docker's image manifest (schema 2), which registries and layouts written by other tools hold.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// docker's manifest list (schema 2), the counterpart of the OCI index.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The annotation of an image index entry that says what it refers to (BuildKit's
/// `vnd.docker.reference.type`).
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// [`REFERENCE_TYPE`] of an attestation manifest: in-toto statements about another entry.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The annotation naming the image manifest an attestation manifest is about.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
