fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        // Payload chunks stay `Bytes` so they move between messages without copies.
        .bytes(".")
        .compile_protos(&["proto/storage.proto", "proto/query.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
