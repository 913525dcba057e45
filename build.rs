use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A PROTOC from the environment wins; otherwise use the vendored binary so
    // no system protoc is needed.
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let include = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), include];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let config = || {
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(protoc.clone());
        // `prost::Name`, so the servers' codec can find a request's shape
        // in the descriptor set.
        config.enable_type_names();
        config
    };

    let files = [
        "proto/hookplane/v1/resources.proto",
        "proto/hookplane/v1/tenant_service.proto",
        "proto/hookplane/v1/credential_service.proto",
        "proto/hookplane/v1/event_type_service.proto",
        "proto/hookplane/v1/endpoint_service.proto",
        "proto/hookplane/v1/subscription_service.proto",
    ];
    // Messages and clients.
    tonic_prost_build::configure()
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("hookplane_descriptor.bin"))
        .compile_with_config(config(), &files.map(PathBuf::from), &includes)?;

    // Servers, over the messages generated above, except that
    // ResolveSubscribers and BatchResolveSubscribers answer with bytes the
    // index encodes itself
    // (`crate::grpc::wire`), and requests decode with the project's codec
    // (`crate::grpc::codec`).
    let servers_dir = out_dir.join("servers");
    std::fs::create_dir_all(&servers_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .out_dir(&servers_dir)
        .codec_path("crate::grpc::codec::RequestCodec")
        .extern_path(".hookplane.v1", "crate::proto")
        .extern_path(
            ".hookplane.v1.ResolveSubscribersResponse",
            "crate::grpc::wire::EncodedResolve",
        )
        .extern_path(
            ".hookplane.v1.BatchResolveSubscribersResponse",
            "crate::grpc::wire::EncodedBatchResolve",
        )
        .compile_with_config(config(), &files.map(PathBuf::from), &includes)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
