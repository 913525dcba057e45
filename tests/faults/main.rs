//! The fault suite: real processes killed, a real PostgreSQL stopped, a real
//! disk filled. These tests disturb the machine (they mount file systems and
//! stop database servers), so they are not part of `cargo test`: run them on
//! their own, one at a time, with
//! `cargo test --test faults -- --test-threads=1` (`.ci/run` does, in a
//! serial step). Each test leaves PostgreSQL running, whatever its outcome.

mod disk_full;
#[path = "../api/harness.rs"]
// Not every helper is used here, nor the backend_tests! macro.
#[allow(dead_code, unused_macros, unused_imports)]
mod harness;
mod kill9;
mod postgres;
mod writes;
