//! The `halb` CLI's reading of the agent's HTTP answers: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = halb::api::client::parse_answer(data);
});
