//! Fuzzes `kiln load` with arbitrary bytes as an image archive (`docker save` or OCI layout
//! tar, plain, gzip or zstd): `archive::load` into a fresh store in a temporary directory.
//! Beyond "no panic": nothing is created, changed or followed outside the store's root (the
//! sentinel beside it is untouched, see `jail.rs`), the root holds only the names a store is
//! made of (`Store::open` refuses to adopt a directory holding others, so a load must not leave
//! any), and the images a load reports are in the store under the names it gave.
#![no_main]

#[path = "jail.rs"]
mod jail;

use jail::Jail;
use kiln::archive::{LoadOptions, Progress, load};
use kiln::store::Store;
use libfuzzer_sys::fuzz_target;
use std::fs;

/// The most uncompressed bytes the archive and each layer in it may hold: small, so that a
/// compressed bomb stops early and the exec rate stays up (the command's default is 1 TiB).
const MAX_BYTES: u64 = 4 << 20;

/// What a store's root may hold (as `Store::open` lists them), besides `*.lock` files.
const STORE_NAMES: [&str; 8] = [
    "blobs",
    "origins",
    "snapshots",
    "containers",
    "tmp",
    "cache",
    "index.json",
    "oci-layout",
];

fuzz_target!(|data: &[u8]| {
    let jail = Jail::new(false);
    let store = Store::open(jail.root()).expect("open a fresh store");
    let options = LoadOptions {
        max_bytes: MAX_BYTES,
    };
    let mut layers = 0usize;
    let loaded = load(&store, data, &options, &mut |Progress::Layer { .. }| {
        layers += 1
    });
    if let Ok(images) = loaded {
        for image in &images {
            for name in &image.names {
                let found = store
                    .resolve(&name.full())
                    .expect("a loaded image resolves by the name it was given");
                // Two images of one archive may claim one name: the later one keeps it.
                let last = images
                    .iter()
                    .rev()
                    .find(|i| i.names.contains(name))
                    .expect("the name is in the list");
                assert_eq!(found.id, last.id);
            }
        }
    }
    for entry in fs::read_dir(jail.root()).expect("list the store's root") {
        let name = entry.expect("read the store's root").file_name();
        let name = name.to_string_lossy();
        assert!(
            STORE_NAMES.contains(&name.as_ref()) || name.ends_with(".lock"),
            "the load left {name:?} in the store's root"
        );
    }
    drop(store);
    jail.check();
});
