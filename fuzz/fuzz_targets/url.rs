#![no_main]
//! Callback URLs (see tests/properties/checks.rs).

#[path = "../../tests/properties/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|text: &str| checks::url(text));
