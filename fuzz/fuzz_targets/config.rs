//! The config parser and validator on arbitrary text: never a panic, and
//! every problem carries a location inside the text.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = halb::config::parse(Path::new("fuzz.toml"), text) {
        let lines = text.lines().count().max(1) + 1;
        for p in &e.problems {
            let l = p.location.as_ref().expect("a located problem");
            assert!(l.line >= 1 && l.line <= lines, "{p}");
            assert!(l.column >= 1, "{p}");
        }
    }
});
