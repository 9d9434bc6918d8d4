use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use integration_tests::get_json;
use integration_tests::otlp::{Receiver, Span};
use integration_tests::process::ServerProcess;
use integration_tests::prometheus::{self, Sample};

use crate::{server_binary, spawn};

fn binary(name: &str) -> PathBuf {
    match name {
        "storage-node" => PathBuf::from(env!("CARGO_BIN_EXE_test-storage-node")),
        "query-service" => PathBuf::from(env!("CARGO_BIN_EXE_test-query-service")),
        _ => server_binary(),
    }
}

#[tokio::test]
async fn one_request_is_one_trace_across_gateway_storage_node_and_query_service() {
    let receiver = Receiver::keeping_spans();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(receiver.clone().serve(listener));
    // The services log their start (which tells the address) and otherwise only warnings, the
    // request spans among them: the log level does not decide what is traced.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        (
            "RS_LOG_LEVEL",
            "warn,gateway=info,storage_node=info,query_service=info,gateway::observe=warn",
        ),
    ];

    let data = tempfile::tempdir().unwrap();
    let storage_data = data.path().join("storage").to_string_lossy().into_owned();
    let query_data = data.path().join("query").to_string_lossy().into_owned();
    let free = ["--metrics-listen", "127.0.0.1:0"];
    let mut storage = ServerProcess::spawn_with_env(
        &binary("storage-node"),
        &[
            &["--listen", "127.0.0.1:0", "--data-path", &storage_data][..],
            &free,
        ]
        .concat(),
        &env,
    )
    .await
    .unwrap();
    let storage_url = format!("http://{}", storage.addr);
    let mut query = ServerProcess::spawn_with_env(
        &binary("query-service"),
        &[
            &[
                "--listen",
                "127.0.0.1:0",
                "--storage-url",
                &storage_url,
                "--data-path",
                &query_data,
            ][..],
            &free,
        ]
        .concat(),
        &env,
    )
    .await
    .unwrap();
    let query_url = format!("http://{}", query.addr);
    let mut gateway = ServerProcess::spawn_with_env(
        &binary("gateway"),
        &[
            "--port",
            "0",
            "--storage-url",
            &storage_url,
            "--query-url",
            &query_url,
        ],
        &env,
    )
    .await
    .unwrap();

    let base = format!("http://{}/api/v1", gateway.addr);
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .post(format!("{base}/b/traced"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = client
        .post(format!("{base}/b/traced/e?ts=1"))
        .body("one")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = get_json(&client, format!("{base}/b/traced/e/q")).await["id"]
        .as_u64()
        .unwrap();
    let response = client
        .get(format!("{base}/b/traced/e?q={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-reduct-last"], "1");

    // A clean stop flushes every exporter.
    for process in [&mut gateway, &mut query, &mut storage] {
        assert!(process.terminate().await.unwrap().success());
    }
    let spans = receiver.spans();
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|span| (span.span_id.as_slice(), span)).collect();

    // The query read: gateway span, whose trace holds spans of all three services, the services'
    // own server spans being children of the gateway's.
    let read = spans
        .iter()
        .find(|span| span.service == "gateway" && span.name == "GET /api/v1/b/{bucket}/{entry}")
        .unwrap_or_else(|| panic!("no gateway span of the read among {spans:#?}"));
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|span| span.trace_id == read.trace_id)
        .collect();
    let services: HashSet<&str> = trace.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(
        services,
        HashSet::from(["gateway", "storage-node", "query-service"]),
        "{trace:#?}"
    );
    for (service, rpc) in [
        ("query-service", "/query.v1.Query/Next"),
        ("storage-node", "/storage.v1.Storage/ReadRecord"),
    ] {
        let span = trace
            .iter()
            .find(|span| span.service == service && span.name == rpc)
            .unwrap_or_else(|| panic!("no {rpc} span in {trace:#?}"));
        let parent = by_id
            .get(span.parent_span_id.as_slice())
            .expect("the parent span was exported");
        assert_eq!(parent.service, "gateway", "{rpc} is a child of {parent:?}");
    }

    // The write: one trace from the gateway into the storage node.
    let write = spans
        .iter()
        .find(|span| span.service == "gateway" && span.name == "POST /api/v1/b/{bucket}/{entry}")
        .expect("a gateway span of the write");
    let stored = spans
        .iter()
        .find(|span| span.service == "storage-node" && span.name == "/storage.v1.Storage/WriteRecord")
        .expect("a storage span of the write");
    assert_eq!(stored.trace_id, write.trace_id);
    assert_eq!(by_id[stored.parent_span_id.as_slice()].service, "gateway");

    // The gateway's spans say what was asked and what was answered.
    let attribute = |span: &Span, key: &str| span.attributes.get(key).cloned().unwrap_or_default();
    for (span, method, status) in [(write, "POST", "200"), (read, "GET", "200")] {
        assert_eq!(attribute(span, "http.request.method"), method, "{span:?}");
        assert_eq!(attribute(span, "http.route"), "/api/v1/b/{bucket}/{entry}");
        assert_eq!(attribute(span, "reduct.bucket"), "traced");
        assert_eq!(attribute(span, "reduct.entry"), "e");
        assert_eq!(attribute(span, "http.response.status_code"), status);
    }
    assert_eq!(attribute(write, "http.request.body.size"), "3");
    assert_eq!(attribute(read, "http.response.body.size"), "3");
    assert_eq!(attribute(stored, "rpc.grpc.status_code"), "0");

    // Metrics went over OTLP too, with the last values sent as each service stopped.
    assert_eq!(
        receiver.counter("storage-node", "reduct_records_written"),
        Some(1.0)
    );
    assert_eq!(
        receiver.counter("storage-node", "reduct_bytes_written"),
        Some(3.0)
    );
    assert_eq!(receiver.counter("storage-node", "reduct_records_read"), Some(1.0));
    let requests = receiver
        .counter("gateway", "reduct_http_requests")
        .unwrap_or_default();
    assert!(requests >= 4.0, "the gateway counted {requests} requests");
}

/// The value of a sample; a sample that is not there is an error unless `absent_is_zero` (a
/// counter nothing has counted yet is not exported).
fn sample(metrics: &[Sample], name: &str, labels: &[(&str, &str)], absent_is_zero: bool) -> f64 {
    let values: Vec<f64> = metrics
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    if values.is_empty() && !absent_is_zero {
        let names: HashSet<&str> = metrics.iter().map(|s| s.name.as_str()).collect();
        panic!("no sample {name} {labels:?} among {names:?}");
    }
    values.iter().sum()
}

async fn scrape(client: &reqwest::Client, url: &str) -> Vec<Sample> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    prometheus::parse(&text).unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_by_what_was_done() {
    let data = tempfile::tempdir().unwrap();
    let server = spawn(data.path(), &[]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    assert_eq!(
        client
            .post(format!("{base}/api/v1/b/m"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = scrape(&client, &format!("{base}/metrics")).await;

    for ts in 0..3 {
        let response = client
            .post(format!("{base}/api/v1/b/m/e?ts={ts}"))
            .body(vec![7u8; 1000])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    for ts in 0..2 {
        assert_eq!(
            client
                .get(format!("{base}/api/v1/b/m/e?ts={ts}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client
            .get(format!("{base}/api/v1/b/m/e?ts=99"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let after = scrape(&client, &format!("{base}/metrics")).await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels, false) - sample(&before, name, labels, true)
    };
    assert_eq!(moved("reduct_records_written_total", &[]), 3.0);
    assert_eq!(moved("reduct_bytes_written_bytes_total", &[]), 3000.0);
    assert_eq!(moved("reduct_records_read_total", &[]), 2.0);
    assert_eq!(moved("reduct_bytes_read_bytes_total", &[]), 2000.0);
    let route = ("route", "/api/v1/b/{bucket}/{entry}");
    assert_eq!(
        moved(
            "reduct_http_requests_total",
            &[route, ("method", "POST"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        moved(
            "reduct_http_requests_total",
            &[route, ("method", "GET"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            "reduct_http_requests_total",
            &[route, ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            "reduct_http_request_duration_seconds_count",
            &[route, ("method", "POST")]
        ),
        3.0
    );
    assert_eq!(
        sample(&after, "reduct_storage_usage_bytes", &[("bucket", "m")], false),
        3000.0
    );
}

#[tokio::test]
async fn json_logs_carry_the_trace_id_on_every_line_of_a_request() {
    let data = tempfile::tempdir().unwrap();
    let mut server = spawn(data.path(), &["--log-format", "json", "--log-level", "debug"]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}/api/v1", server.addr);
    assert_eq!(
        client
            .get(format!("{base}/b/missing"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(server.terminate().await.unwrap().success());

    let lines = server.log();
    let records: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let answered = records
        .iter()
        .find(|record| record["fields"]["message"] == "answered")
        .unwrap_or_else(|| panic!("no line of the request in {lines:#?}"));
    let span = &answered["span"];
    assert_eq!(span["http.route"], "/api/v1/b/{bucket}");
    assert_eq!(span["bucket"], "missing");
    let trace_id = span["trace_id"].as_str().expect("a trace id");
    assert_eq!(trace_id.len(), 32);
    assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()) && trace_id != "0".repeat(32));
}
