//! Outbound HTTP: the guarded client that signs what it sends the Standard
//! Webhooks way, and the worker that drains the durable outbox.

mod client;
mod worker;

pub use client::{DeliveryResult, Sender};
pub use worker::Worker;
