//! Scans of synthetic roots: each ecosystem, confinement, bounds, and the document against the
//! SPDX 2.3 schema.
