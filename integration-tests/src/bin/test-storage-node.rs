//! The storage-node program, built in this package so that its tests can run it as a process through
//! `CARGO_BIN_EXE_test-storage-node`.

fn main() -> std::process::ExitCode {
    storage_node::main_from_args()
}
