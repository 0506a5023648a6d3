//! Fuzzes layer unpacking with arbitrary bytes as a layer blob: compression detection and
//! bounded decompression (`layer::decompressed`, plain tar, gzip or zstd by magic bytes), then
//! `layer::apply_layer` under a fresh root, once with overlay whiteouts (snapshots) and once
//! applying them (flattening). Beyond "no panic": nothing is created, changed or followed
//! outside the root (the sentinel beside it is untouched, see `jail.rs`), and a successful apply
//! reports the diff ID and size of the whole uncompressed stream, as its documentation promises.
#![no_main]

#[path = "jail.rs"]
mod jail;

use jail::Jail;
use kiln::layer::{ApplyOptions, Compression, Whiteouts, apply_layer, decompressed};
use kiln::oci::Digest;
use libfuzzer_sys::fuzz_target;
use std::io::Read;

/// The most uncompressed bytes one input may expand to: a small gzip or zstd bomb stops here,
/// which keeps the exec rate up (real callers pass 1 TiB).
const MAX_BYTES: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    let compression = Compression::detect(data);
    // The stream the appliers should see, read on its own: what the diff ID must be of.
    let mut uncompressed = Vec::new();
    let whole = match decompressed(data, MAX_BYTES) {
        Ok(mut reader) => reader.read_to_end(&mut uncompressed).is_ok(),
        Err(_) => false,
    };
    if compression == Compression::None && whole {
        assert_eq!(uncompressed, data, "a plain tar passes through unchanged");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let same_owner = unsafe { libc::geteuid() } == 0;
    for whiteouts in [Whiteouts::Overlay, Whiteouts::Apply] {
        let jail = Jail::new(true);
        let options = ApplyOptions {
            whiteouts,
            max_bytes: MAX_BYTES,
            same_owner,
            user_xattr: false,
        };
        let applied = decompressed(data, MAX_BYTES)
            .and_then(|reader| apply_layer(reader, jail.root(), &options));
        if let Ok(applied) = applied {
            assert!(
                whole,
                "apply succeeded on a stream that does not decompress"
            );
            assert_eq!(applied.diff_id, Digest::of(&uncompressed));
            assert_eq!(applied.size, uncompressed.len() as u64);
        }
        jail.check();
    }
});
