//! Fuzzes `WWW-Authenticate` parsing (`registry::auth::Challenge::parse`, what the registry
//! client reads from every 401) with arbitrary strings. Beyond "no panic" and termination (a
//! parser that stops advancing is a libFuzzer timeout): schemes and parameter names come out
//! lower-case as documented, and are never empty nor hold the whitespace and commas that
//! separate them; the client's own lookups (`param`) agree with the parameter map.
#![no_main]

use kiln::registry::auth::Challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values the client reads went through `HeaderValue::to_str`, so they are text.
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let separator = |c: char| c.is_whitespace() || c == ',';
    for challenge in Challenge::parse(header) {
        let scheme = &challenge.scheme;
        assert!(!scheme.is_empty(), "empty scheme from {header:?}");
        assert_eq!(
            scheme,
            &scheme.to_ascii_lowercase(),
            "scheme not lower-case"
        );
        assert!(
            !scheme.contains(separator),
            "scheme {scheme:?} holds a separator"
        );
        for (name, value) in &challenge.params {
            assert!(!name.is_empty(), "empty parameter name from {header:?}");
            assert_eq!(name, &name.to_ascii_lowercase(), "name not lower-case");
            assert!(!name.contains(separator), "name {name:?} holds a separator");
            assert!(!name.contains('='), "name {name:?} holds `=`");
            assert_eq!(challenge.param(name), Some(value.as_str()));
        }
    }
});
