//! Compiling a realistic `.dockerignore` and matching 100,000 generated context paths.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::frontend::context::Dockerignore;
use std::hint::black_box;

const DOCKERIGNORE: &str = "\
# build output and dependencies
.git
.github
**/.DS_Store
node_modules
**/node_modules
target/
dist/**
build
*.log
**/*.pyc
**/__pycache__
.venv
coverage/*
**/*.tmp
docs/**/*.md
!docs/README.md
.env*
!.env.example
**/testdata/large-*
vendor
!vendor/modules.txt
";

/// Deterministic paths shaped like a mid-sized repository.
fn paths() -> Vec<String> {
    let dirs = [
        "src",
        "src/api",
        "src/api/v1",
        "node_modules/react/lib",
        "docs/guide",
        "target/debug",
        "pkg/util/testdata",
        "app/__pycache__",
        "vendor/github.com/x",
        ".git/objects/ab",
    ];
    let names = [
        "main.rs",
        "index.js",
        "mod.py",
        "mod.pyc",
        "README.md",
        "large-1.bin",
        "a.log",
    ];
    (0..100_000)
        .map(|i| {
            let dir = dirs[i % dirs.len()];
            let name = names[(i / dirs.len()) % names.len()];
            format!("{dir}/n{}/{name}", i % 97)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    c.bench_function("compile 21 patterns", |b| {
        b.iter(|| Dockerignore::parse(black_box(DOCKERIGNORE)).expect("valid"))
    });
    let ignore = Dockerignore::parse(DOCKERIGNORE).expect("valid");
    let paths = paths();
    c.bench_function("match 100k paths", |b| {
        b.iter(|| {
            paths
                .iter()
                .filter(|p| ignore.is_excluded(black_box(p)))
                .count()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
