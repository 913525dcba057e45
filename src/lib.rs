//! hookplane: a gRPC control plane for webhook subscriptions.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod model;
pub mod proto;
pub mod repository;
pub mod resolve;
pub mod service;
pub mod serving;
pub mod sign;
pub mod startup;
pub mod telemetry;
