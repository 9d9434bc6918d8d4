use std::process::ExitCode;

use bench::BenchConfig;
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = BenchConfig::parse();
    let report = match bench::run(&config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Some(path) = &config.csv
        && let Err(e) = std::fs::write(path, report.csv())
    {
        eprintln!("bench: cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
