//! The gateway program, built in this package so that its tests can run it as a process (where a
//! kill or a full disk is the point) through `CARGO_BIN_EXE_test-gateway`.

fn main() -> std::process::ExitCode {
    gateway::main_from_args()
}
