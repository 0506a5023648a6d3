//! The layering of ARCHITECTURE.md, enforced: every `crate::…` path in the library's code may
//! name only a module of a lower rank than its own. The ranks are read from ARCHITECTURE.md's
//! table, so the map and the rule cannot drift apart.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The ranks of ARCHITECTURE.md's table: rows `| RANK | `module` | concern |`.
fn ranks(architecture: &str) -> BTreeMap<String, u32> {
    architecture
        .lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let rank = cells.next()?.parse::<u32>().ok()?;
            let module = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((module.to_string(), rank))
        })
        .collect()
}

/// The code of a line: string literals blanked out and a trailing `//` comment dropped.
fn code_of(line: &str) -> String {
    let mut code = String::with_capacity(line.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '/' if !in_string && chars.peek() == Some(&'/') => break,
            _ => {}
        }
        code.push(if in_string && c != '"' { ' ' } else { c });
    }
    code
}

/// The top-level modules a line's code names through `crate::`.
fn named_modules(code: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if !preceded_by_ident && end > 0 {
            found.push(&rest[..end]);
        }
    }
    found
}

/// Every import against the direction in `files` (`src`-relative path, text), as
/// `path:line: message`.
fn violations(files: &[(PathBuf, String)], ranks: &BTreeMap<String, u32>) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        let Some(module) = path
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|first| first.trim_end_matches(".rs"))
        else {
            continue;
        };
        let Some(&own) = ranks.get(module) else {
            found.push(format!(
                "src/{}: module `{module}` has no row in ARCHITECTURE.md's table",
                path.display()
            ));
            continue;
        };
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for named in named_modules(&code_of(line)) {
                if named == module {
                    continue;
                }
                match ranks.get(named) {
                    Some(&rank) if rank < own => {}
                    Some(&rank) => found.push(format!(
                        "src/{}:{}: `{module}` (rank {own}) imports `{named}` (rank {rank}); a \
                         module may import only lower ranks (ARCHITECTURE.md)\n    {}",
                        path.display(),
                        number + 1,
                        line.trim()
                    )),
                    None => found.push(format!(
                        "src/{}:{}: `{named}` has no row in ARCHITECTURE.md's table\n    {}",
                        path.display(),
                        number + 1,
                        line.trim()
                    )),
                }
            }
        }
    }
    found
}

/// The library's sources, `src`-relative: everything but the binary (`main.rs`, `cli/`) and the
/// crate root.
fn library_sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            let relative = path.strip_prefix(src).expect("under src").to_path_buf();
            if relative == Path::new("cli")
                || relative == Path::new("main.rs")
                || relative == Path::new("lib.rs")
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = fs::read_to_string(&path).expect("read source");
                files.push((relative, text));
            }
        }
    }
    files.sort();
    files
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn imports_follow_the_layers_of_architecture_md() {
    let architecture =
        fs::read_to_string(manifest_dir().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let ranks = ranks(&architecture);
    assert!(ranks.len() >= 10, "ARCHITECTURE.md's table: {ranks:?}");
    let files = library_sources(&manifest_dir().join("src"));
    assert!(files.len() > 50, "found {} sources", files.len());
    let found = violations(&files, &ranks);
    assert!(
        found.is_empty(),
        "imports against ARCHITECTURE.md's layering:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_rank() {
    let architecture =
        fs::read_to_string(manifest_dir().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let ranks = ranks(&architecture);
    let lib = fs::read_to_string(manifest_dir().join("src/lib.rs")).expect("lib.rs");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .filter_map(|l| l.strip_suffix(';'))
        .collect();
    assert!(!declared.is_empty());
    for module in &declared {
        assert!(
            ranks.contains_key(*module),
            "src/lib.rs declares `{module}`, which has no row in ARCHITECTURE.md"
        );
    }
    for module in ranks.keys() {
        assert!(
            declared.contains(&module.as_str()),
            "ARCHITECTURE.md ranks `{module}`, which src/lib.rs does not declare"
        );
    }
}

/// The checker itself: a wrong import is reported with its file and line; comments, strings,
/// same-module paths and lower ranks are not.
#[test]
fn a_wrong_import_is_reported_with_its_file_and_line() {
    let ranks = ranks(
        "| 0 | `oci` | x |\n| 2 | `store` | x |\n| 2 | `layer` | x |\n| 7 | `builder` | x |\n",
    );
    let store_file = "\
//! Docs may mention [`crate::builder`].
use crate::oci::Digest;
use crate::store::blob::BlobStore;
use crate::builder::compile::Step; // the wrong one
let url = \"see crate::builder\"; // a string, not a path
fn f() { crate::layer::apply(); }
mod tests { use crate::nowhere::X; }
";
    let files = vec![
        (PathBuf::from("store/mod.rs"), store_file.to_string()),
        (
            PathBuf::from("builder/mod.rs"),
            "use crate::store::Store;\n".to_string(),
        ),
    ];
    let found = violations(&files, &ranks);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("src/store/mod.rs:4: `store` (rank 2) imports `builder` (rank 7)")
    );
    assert!(found[0].contains("use crate::builder::compile::Step;"));
    assert!(found[1].starts_with("src/store/mod.rs:6: `store` (rank 2) imports `layer` (rank 2)"));
    assert!(found[2].starts_with("src/store/mod.rs:7: `nowhere` has no row"));
}
