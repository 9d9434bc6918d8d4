//! The query-service program, built in this package so that its tests can run it as a process through
//! `CARGO_BIN_EXE_test-query-service`.

fn main() -> std::process::ExitCode {
    query_service::main_from_args()
}
