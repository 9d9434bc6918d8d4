use clap::Parser;
use gateway::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    if let Err(e) = proto::runtime::init_logging(&config.log_level) {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let server = match gateway::start(config, proto::runtime::shutdown_signal()).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!("serving the HTTP API on http://{}", server.local_addr);
    if let Err(e) = server.wait().await {
        tracing::error!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
