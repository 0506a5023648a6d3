//! Placeholder until the .dockerignore matcher lands.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|_data: &[u8]| {});
