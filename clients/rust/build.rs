use std::path::PathBuf;

/// Clients and messages from the server's own proto files: one contract.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let proto = PathBuf::from("../../proto");
    let includes = [proto.clone(), protoc_bin_vendored::include_path()?];
    let files = [
        "resources.proto",
        "tenant_service.proto",
        "credential_service.proto",
        "event_type_service.proto",
        "endpoint_service.proto",
        "subscription_service.proto",
    ]
    .map(|f| proto.join("hookplane/v1").join(f));
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(config, &files, &includes)?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
