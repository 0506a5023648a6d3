//! Supply-chain attestations of a built image, as BuildKit attaches them: in-toto statements
//! (<https://in-toto.io/Statement/v1>) whose predicate is an SPDX 2.3 SBOM ([`sbom`]) or SLSA
//! provenance v1 (`provenance`), stored as attestation manifests in the image index
//! (`vnd.docker.reference.type: attestation-manifest`).
//!
//! Pure generation: this module reads a root filesystem (confined to it) and build facts handed
//! in by the builder, and returns documents; writing them into the store and the index is the
//! builder's exporters' job.

pub mod intoto;
pub mod provenance;
pub mod sbom;
