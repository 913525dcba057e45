//! hookplane: a gRPC control plane for webhook subscriptions.

pub mod auth;
pub mod crypto;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod model;
pub mod proto;
pub mod resolve;
pub mod repository;
pub mod config;
pub mod grpc;
pub mod service;
pub mod sign;
pub mod startup;
pub mod telemetry;
