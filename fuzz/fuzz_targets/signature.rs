#![no_main]
//! Signature metadata (see tests/properties/checks.rs).

#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|input: (&str, &str, &str, &str)| {
    checks::signature_metadata(input.0, input.1, input.2, input.3)
});
