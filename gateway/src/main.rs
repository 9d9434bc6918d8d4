fn main() -> std::process::ExitCode {
    gateway::main_from_args()
}
