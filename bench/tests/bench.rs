use bench::{BenchConfig, format_size, parse_size};
use clap::Parser;

#[test]
fn sizes_parse_with_units_and_bad_ones_are_named() {
    assert_eq!(parse_size("1024").unwrap(), 1024);
    assert_eq!(parse_size("1KiB").unwrap(), 1024);
    assert_eq!(parse_size("64 KiB").unwrap(), 65536);
    assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
    assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
    assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
    assert!(parse_size("lots").unwrap_err().contains("'lots'"));
    assert!(parse_size("5 parsecs").unwrap_err().contains("unknown unit"));
    assert_eq!(format_size(16 << 20), "16MiB");
    assert_eq!(format_size(1000), "1000B");
}

#[test]
fn flags_parse_into_the_run_plan() {
    let config = BenchConfig::parse_from([
        "bench",
        "--url",
        "http://server:8383",
        "--sizes",
        "1KiB,16MiB",
        "--concurrency",
        "1,8",
        "--records",
        "100",
        "--max-bytes",
        "64MiB",
        "--scenarios",
        "write,read",
    ]);
    assert_eq!(config.sizes, vec![1024, 16 << 20]);
    assert_eq!(config.concurrency, vec![1, 8]);
    assert_eq!(config.scenarios, vec!["write", "read"]);
    assert_eq!(config.records_for(1024), 100);
    assert_eq!(config.records_for(16 << 20), 4);
    assert!(BenchConfig::try_parse_from(["bench", "--scenarios", "delete"]).is_err());
    assert!(BenchConfig::try_parse_from(["bench", "--sizes", "big"]).is_err());
}

#[tokio::test]
async fn a_short_run_reads_back_what_it_wrote() {
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().to_string_lossy().into_owned();
    let server_config = gateway::Config::parse_from(["gateway", "--port", "0", "--data-path", &data_path]);
    let server = gateway::start(server_config, std::future::pending())
        .await
        .unwrap();
    let config = BenchConfig::parse_from([
        "bench",
        "--url",
        &format!("http://{}", server.local_addr),
        "--sizes",
        "1KiB,300KiB",
        "--concurrency",
        "1,3",
        "--records",
        "20",
        "--quiet",
        // The server runs in this process.
        "--server-pid",
        &std::process::id().to_string(),
    ]);
    let report = bench::run(&config).await.unwrap();
    assert_eq!(report.results.len(), 2 * 2 * 3);
    for result in &report.results {
        assert_eq!(result.records, 20, "{result:?}");
        assert!(result.server_cpu_micros_per_record().is_some(), "{result:?}");
        assert!(result.records_per_second() > 0.0);
        assert!(result.percentile(0.99) >= result.percentile(0.5));
    }
    let table = report.table();
    assert!(table.contains("| query    | 300KiB"), "{table}");
    assert!(
        table.contains("server CPU us/rec") && table.contains("server peak RSS"),
        "{table}"
    );
    assert_eq!(report.csv().lines().count(), 1 + 12);
    // The bucket is removed after the run.
    let list = reqwest::get(format!("http://{}/api/v1/list", server.local_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains("bench"), "{list}");
}

#[tokio::test]
async fn a_server_that_returns_wrong_bytes_fails_the_run() {
    // A tiny server that answers every read with the same wrong body.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let answer = if request.starts_with("GET") {
                        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnope"
                    } else {
                        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let config = BenchConfig::parse_from([
        "bench",
        "--url",
        &format!("http://{addr}"),
        "--sizes",
        "16",
        "--concurrency",
        "1",
        "--records",
        "2",
        "--scenarios",
        "write,read",
        "--quiet",
    ]);
    let error = bench::run(&config).await.unwrap_err();
    assert!(error.contains("differs"), "{error}");
}
