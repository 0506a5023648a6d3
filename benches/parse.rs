//! Parses the 160 real Dockerfiles of `../shared/conformance/parser/real-dockerfiles` (syntax
//! only, then syntax + dump), the figure recorded in BENCHMARKS.md; and the build checks over
//! the parsed files (what a build adds to planning).
//!
//! `cargo bench --bench parse`

// A benchmark's own report, not kiln's text (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;

fn real_dockerfiles() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/conformance/parser/real-dockerfiles");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("notice: {} is absent; nothing to bench", dir.display());
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.ends_with(".result") && name != "MANIFEST.tsv"
        })
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn bench_parse(c: &mut Criterion) {
    let files = real_dockerfiles();
    if files.is_empty() {
        return;
    }
    let bytes: usize = files.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("parse_real_dockerfiles");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(format!("syntax_{}_files", files.len()), |b| {
        b.iter(|| {
            for f in &files {
                let _ = black_box(kiln::frontend::parse(black_box(f)));
            }
        })
    });
    group.bench_function(format!("syntax_and_dump_{}_files", files.len()), |b| {
        b.iter(|| {
            for f in &files {
                if let Ok(df) = kiln::frontend::parse(black_box(f)) {
                    black_box(df.dump());
                }
            }
        })
    });
    // The checks run once per build over the AST already parsed: every stage dispatched, as
    // `--check` does.
    let parsed: Vec<kiln::frontend::ast::Dockerfile> = files
        .iter()
        .filter_map(|f| kiln::frontend::parse(f).ok())
        .collect();
    let options = kiln::frontend::stage::ResolveOptions::default();
    let config = kiln::frontend::lint::LintConfig::default();
    group.bench_function(format!("lint_{}_files", parsed.len()), |b| {
        b.iter(|| {
            for df in &parsed {
                let input = kiln::frontend::lint::LintInput {
                    dockerfile: df,
                    options: &options,
                    dispatch_until: None,
                    dispatched: None,
                    reachable: None,
                    dockerignore: None,
                };
                black_box(kiln::frontend::lint::lint(black_box(&input), &config));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
