//! Compiles the `.proto` files with protox (pure Rust, no protoc) and generates
//! tonic clients and servers from the resulting descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["signer/v1/signer.proto", "witness/v1/witness.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
