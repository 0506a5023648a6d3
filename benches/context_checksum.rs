//! Checksumming a build context of 20,000 small files: with a cold stat cache (every file read
//! and hashed) and a warm one (only opened and stat'ed), and loading a 20,000-entry stat cache.
//! "Cold" means the stat cache, not the page cache: the files stay in memory between runs.

// A benchmark's own report, not kiln's text (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::cache::{StatCache, checksum_paths};
use kiln::frontend::context::{BuildContext, ContextOwners};
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;

/// Writes 20,000 files of 64 to 1,087 bytes into `root`, 100 per directory.
fn make_context(root: &Path) {
    for d in 0..DIRS {
        let dir = root.join(format!("pkg{d:03}"));
        fs::create_dir_all(&dir).expect("create directory");
        for f in 0..FILES_PER_DIR {
            let size = 64 + (d * FILES_PER_DIR + f) % 1024;
            let content: Vec<u8> = (0..size).map(|i| b'a' + ((i + f) % 26) as u8).collect();
            fs::write(dir.join(format!("file{f:03}.txt")), content).expect("write file");
        }
    }
}

fn bench(c: &mut Criterion) {
    let temp = tempfile::tempdir().expect("temporary directory");
    let root = temp.path().join("context");
    make_context(&root);
    // The stat cache remembers a file only once it is older than the whole second before a
    // checksum starts (the racy-clean rule); wait that out so the warm run is warm.
    std::thread::sleep(Duration::from_secs(2));
    let context = BuildContext::open(&root, None).expect("open context");
    let paths = context
        .select_sources(&[".".to_string()])
        .expect("select")
        .remove(0)
        .paths;
    assert_eq!(paths.len(), DIRS * FILES_PER_DIR + DIRS);
    let root = context.root();

    let mut group = c.benchmark_group("context checksum, 20k files");
    group.sample_size(10);
    let cold_dir = temp.path().join("cold");
    group.bench_function("cold stat cache", |b| {
        b.iter(|| {
            let cache = StatCache::load(&cold_dir, root);
            checksum_paths(root, black_box(&paths), ContextOwners::Root, &cache).expect("checksum")
        })
    });
    let warm_dir = temp.path().join("warm");
    let warm = StatCache::load(&warm_dir, root);
    checksum_paths(root, &paths, ContextOwners::Root, &warm).expect("checksum");
    assert_eq!(warm.len(), DIRS * FILES_PER_DIR, "every file remembered");
    group.bench_function("warm stat cache", |b| {
        b.iter(|| {
            checksum_paths(root, black_box(&paths), ContextOwners::Root, &warm).expect("checksum")
        })
    });
    warm.save().expect("save");
    group.bench_function("load 20k-entry stat cache", |b| {
        b.iter(|| StatCache::load(black_box(&warm_dir), root))
    });
    group.finish();
    let size = fs::metadata(warm.path()).map_or(0, |m| m.len());
    eprintln!("stat cache file: {size} bytes for {} entries", warm.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
