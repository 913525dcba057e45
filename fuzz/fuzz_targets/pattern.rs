#![no_main]
//! Event patterns and matching (see tests/properties/checks.rs).

#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: (&str, &str)| checks::pattern(input.0, input.1));
