//! What every service binary does the same way around its server: logging and the shutdown
//! signal.

/// Starts the log subscriber with `filter` (`info`, `debug`, or a tracing directive). A filter
/// that does not parse is an error naming it, so a typo does not silently hide logs.
pub fn init_logging(filter: &str) -> Result<(), String> {
    let parsed = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("Log level '{filter}' is invalid: {e}"))?;
    // A subscriber set before (by a test harness, say) is kept.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(parsed)
        .with_ansi(colours)
        .try_init();
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
