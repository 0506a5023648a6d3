//! Fuzzes `.dockerignore` parsing and matching with arbitrary bytes: no panic, and directory
//! pruning never skips a directory holding a path the patterns keep (checked inside
//! `fuzz_parse_and_match`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kiln::frontend::context::dockerignore::fuzz_parse_and_match(data);
});
