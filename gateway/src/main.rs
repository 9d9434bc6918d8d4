use clap::Parser;
use gateway::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    gateway::init_logging(&config.log_level);
    let server = match gateway::start(config, shutdown_signal()).await {
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

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
