//! Generated protobuf and gRPC code, and the descriptor set for reflection.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("hookplane.v1");

/// Encoded `FileDescriptorSet` of the hookplane protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("hookplane_descriptor");

/// The services' servers. SubscriptionService's answers ResolveSubscribers
/// with [`crate::grpc::wire::EncodedResolve`]; see `build.rs`.
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/servers/hookplane.v1.rs"));
}
