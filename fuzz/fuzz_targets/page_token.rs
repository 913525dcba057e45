#![no_main]
//! Page tokens (see tests/properties/checks.rs).

#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: (&str, i64, &str, &str)| {
    checks::page_token(input.0, input.1, input.2, input.3)
});
