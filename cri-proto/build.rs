//! Compiles proto/api.proto with protox (no system protoc) and tonic-prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).open_file("api.proto")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Encoded by protox itself so field options such as debug_redact survive.
    std::fs::write(out.join("cri_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        // RPCs a server does not implement answer Unimplemented.
        .generate_default_stubs(true)
        // AuthConfig carries registry secrets: its Debug is written by hand.
        .skip_debug(["runtime.v1.AuthConfig"])
        // crictl-style JSON configs (snake_case proto field names, enums as numbers).
        .type_attribute(".runtime.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".runtime.v1", "#[serde(default)]")
        // AuthConfig is never written out.
        .field_attribute(".runtime.v1.AuthConfig.password", "#[serde(skip_serializing)]")
        .field_attribute(".runtime.v1.AuthConfig.auth", "#[serde(skip_serializing)]")
        .field_attribute(".runtime.v1.AuthConfig.identity_token", "#[serde(skip_serializing)]")
        .field_attribute(".runtime.v1.AuthConfig.registry_token", "#[serde(skip_serializing)]")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
