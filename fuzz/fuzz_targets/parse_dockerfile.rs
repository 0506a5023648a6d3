//! Fuzzes the Dockerfile front end with arbitrary bytes: parsing must never panic, and whatever
//! parses must also dump and serialize without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(dockerfile) = kiln::parser::parse(data) {
        let dump = dockerfile.dump();
        assert!(dump.is_empty() || dump.ends_with('\n'));
        let _ = serde_json::to_string(&dockerfile);
    }
});
