//! What every service program does the same way around its server: the runtime, telemetry, the
//! shutdown signal, the exit code, and the admin endpoint with the metrics.

use std::future::Future;
use std::process::ExitCode;

use crate::telemetry::{self, LogArgs};

/// Runs a service program: a multi-threaded runtime, telemetry for `service`, then `run` to its
/// end. Errors are logged; telemetry is flushed before the process exits.
pub fn run_program<Fut>(service: &'static str, logs: &LogArgs, run: impl FnOnce() -> Fut) -> ExitCode
where
    Fut: Future<Output = crate::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{service}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let telemetry = match telemetry::init(service, logs) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("{service}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = run().await;
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        drop(telemetry);
        if result.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
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

/// Binds `address` and serves `GET /metrics` (Prometheus text) there, in the background, for as
/// long as the runtime runs. Returns the bound address.
pub async fn serve_metrics(address: &str) -> crate::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| crate::Error::internal(format!("Cannot listen for metrics on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::Error::internal(e.to_string()))?;
    let app = axum::Router::new().route("/metrics", axum::routing::get(metrics));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics endpoint failed: {e}");
        }
    });
    Ok(bound)
}

/// The metrics as a Prometheus scrape answer.
pub async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::prometheus_text(),
    )
}
