//! Fuzzes the whole Dockerfile front end with arbitrary bytes: parsing, stage resolution (ARG
//! scoping, word expansion), the stage graph and printing instructions back must never panic,
//! and whatever parses must also dump and serialize.
#![no_main]

use kiln::frontend::dag::StageDag;
use kiln::frontend::stage::{ResolveOptions, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(dockerfile) = kiln::frontend::parse(data) else {
        return;
    };
    let dump = dockerfile.dump();
    assert!(dump.is_empty() || dump.ends_with('\n'));
    let _ = serde_json::to_string(&dockerfile);
    let Ok(resolved) = resolve(&dockerfile, &ResolveOptions::default()) else {
        return;
    };
    for stage in &resolved.stages {
        for instruction in &stage.instructions {
            let _ = instruction.to_string();
        }
    }
    if let Ok(graph) = StageDag::new(&resolved, None) {
        // Every needed stage is scheduled exactly once.
        let scheduled: usize = graph.groups().iter().map(Vec::len).sum();
        assert_eq!(scheduled, graph.order().len());
    }
});
