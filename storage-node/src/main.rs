fn main() -> std::process::ExitCode {
    storage_node::main_from_args()
}
