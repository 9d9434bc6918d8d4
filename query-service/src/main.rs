fn main() -> std::process::ExitCode {
    query_service::main_from_args()
}
