use integration_tests::{TestServer, error_detail, payload};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends raw bytes and returns the status code of the first response and the whole answer.
async fn raw_request(server: &TestServer, request: &[u8], close_write: bool) -> (u16, String) {
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    if close_write {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                // One response is enough once its headers and declared body are in.
                let text = String::from_utf8_lossy(&answer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_string)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn write_then_read_by_time_and_latest_with_headers() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    server.write("b", "cam", 1000, "first").await;
    server.write("b", "cam", 3000, "third").await;
    server.write("b", "cam", 2000, "second").await;

    let response = server.get("/b/b/cam?ts=2000").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-reduct-time"], "2000");
    assert_eq!(headers["x-reduct-last"], "1");
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(headers["content-length"], "6");
    assert_eq!(response.text().await.unwrap(), "second");

    let response = server.get("/b/b/cam").send().await.unwrap();
    assert_eq!(response.headers()["x-reduct-time"], "3000");
    assert_eq!(response.text().await.unwrap(), "third");

    let response = server.head("/b/b/cam?ts=1000").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-reduct-time"], "1000");
    assert_eq!(response.headers()["content-length"], "5");
    assert_eq!(response.headers()["x-reduct-last"], "1");
    assert_eq!(response.bytes().await.unwrap().len(), 0);

    let response = server.head("/b/b/cam").send().await.unwrap();
    assert_eq!(response.headers()["x-reduct-time"], "3000");
}

#[tokio::test]
async fn write_errors_name_the_bad_value() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;

    let response = server.post("/b/nope/e?ts=1").body("x").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'nope' is not found");

    let response = server.post("/b/b/e").body("x").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(error_detail(response).await, "'ts' parameter is required");

    for bad in ["abc", "-1", "1.5.5", "", "12e3", "99999999999999999999"] {
        let response = server
            .post(&format!("/b/b/e?ts={bad}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "ts={bad}");
        let detail = error_detail(response).await;
        assert!(detail.contains(&format!("Bad timestamp '{bad}'")), "{detail}");
    }

    let response = server.post("/b/b/bad.entry?ts=1").body("x").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("'bad.entry'"));

    server.write("b", "e", 5, "one").await;
    let response = server.post("/b/b/e?ts=5").body("two").send().await.unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        error_detail(response).await,
        "A record with timestamp 5 already exists"
    );
    assert_eq!(
        server
            .get("/b/b/e?ts=5")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "one"
    );
}

#[tokio::test]
async fn a_fractional_timestamp_is_truncated() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    let response = server
        .post("/b/b/e?ts=1796314318451404.8")
        .body("old")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server.get("/b/b/e?ts=1796314318451404").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "old");
}

#[tokio::test]
async fn a_write_without_content_length_is_refused() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    // A streamed body goes out chunked, without Content-Length.
    let chunks = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"abc"))]);
    let response = server
        .post("/b/b/e?ts=1")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 411);
    assert_eq!(error_detail(response).await, "Content-Length header is required");
    assert_eq!(server.get("/b/b/e?ts=1").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_body_shorter_than_announced_stores_nothing() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    let request = b"POST /api/v1/b/b/e?ts=7 HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhalf!";
    let (status, answer) = raw_request(&server, request, true).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("shorter") || answer.contains("body"), "{answer}");
    let response = server.get("/b/b/e?ts=7").send().await.unwrap();
    assert_eq!(response.status(), 404);
    // The failed write created no visible entry and counts for nothing.
    assert_eq!(server.json("/b/b").await["entries"], serde_json::json!([]));
    assert_eq!(server.json("/info").await["usage"], 0);
}

#[tokio::test]
async fn a_body_that_may_run_past_its_length_stores_nothing() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    // Both a length and chunked coding: the chunks decide where the body ends (RFC 9112), so the
    // length promises nothing and the upload is refused as one without a length.
    let request = b"POST /api/v1/b/b/e?ts=8 HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n6\r\ntoo-lo\r\n0\r\n\r\n";
    let (status, answer) = raw_request(&server, request, false).await;
    assert!(status == 400 || status == 411, "{answer}");
    assert_eq!(server.get("/b/b/e?ts=8").send().await.unwrap().status(), 404);
    assert_eq!(server.json("/info").await["usage"], 0);
}

#[tokio::test]
async fn empty_records_are_records() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    server.write("b", "e", 1, "").await;
    let response = server.get("/b/b/e?ts=1").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "0");
    assert_eq!(response.bytes().await.unwrap().len(), 0);
    assert_eq!(server.json("/b/b").await["entries"][0]["record_count"], 1);
}

#[tokio::test]
async fn records_many_times_the_block_size_round_trip() {
    let server = TestServer::start().await;
    server.create_bucket("b", r#"{"max_block_size": 65536}"#).await;
    let big = payload(1, 5 * 65536 + 123);
    let small = payload(2, 1000);
    server.write("b", "e", 1, small.clone()).await;
    server.write("b", "e", 2, big.clone()).await;
    server.write("b", "e", 3, small.clone()).await;
    let response = server.get("/b/b/e?ts=2").send().await.unwrap();
    assert_eq!(
        response.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), big.as_slice());
    assert_eq!(server.bytes("/b/b/e?ts=3").await.as_ref(), small.as_slice());
    let entry = &server.json("/b/b").await["entries"][0];
    assert_eq!(entry["record_count"], 3);
    assert_eq!(entry["size"], (big.len() + 2 * small.len()) as u64);
    // The large record gets a block of its own; the next record opens another.
    assert_eq!(entry["block_count"], 3);
}

#[tokio::test]
async fn read_errors() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    server.write("b", "e", 10, "x").await;

    let response = server.get("/b/nope/e?ts=10").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'nope' is not found");
    let response = server.get("/b/b/other?ts=10").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Entry 'other' is not found");
    let response = server.get("/b/b/other").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = server.get("/b/b/e?ts=11").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(error_detail(response).await.contains("11"));
    assert_eq!(server.head("/b/b/e?ts=11").send().await.unwrap().status(), 404);

    let response = server.get("/b/b/e?ts=soon").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("Bad timestamp 'soon'"));
    let response = server.get("/b/b/e?q=abc").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("'abc'"));
    let response = server.get("/b/b/e?q=-3").send().await.unwrap();
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn concurrent_writers_to_one_entry_all_land() {
    let server = std::sync::Arc::new(TestServer::start().await);
    server.create_bucket("b", r#"{"max_block_records": 7}"#).await;
    let mut tasks = Vec::new();
    for writer in 0..8u64 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let ts = i * 8 + writer;
                server
                    .write("b", "e", ts, payload(ts, (ts as usize * 37) % 5000))
                    .await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for ts in 0..160u64 {
        let body = server.bytes(&format!("/b/b/e?ts={ts}")).await;
        assert_eq!(
            body.as_ref(),
            payload(ts, (ts as usize * 37) % 5000).as_slice(),
            "record {ts}"
        );
    }
    assert_eq!(server.json("/b/b").await["entries"][0]["record_count"], 160);
}

#[tokio::test]
async fn reads_refuse_bad_entry_names_and_absurd_lengths() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    let response = server.get("/b/b/bad.name").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("'bad.name'"));
    let request =
        b"POST /api/v1/b/b/e?ts=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 18446744073709551000\r\n\r\nabc";
    let (status, answer) = raw_request(&server, request, true).await;
    assert!(status == 422 || status == 507, "{answer}");
    assert_eq!(server.get("/b/b/e?ts=1").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn an_error_before_the_body_is_read_closes_the_connection_and_says_so() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    server.write("b", "e", 1, "first").await;
    let response = server
        .post("/b/b/e?ts=1")
        .body(vec![0u8; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["connection"], "close");
    // The client's next request goes on a new connection and succeeds.
    assert_eq!(
        server
            .get("/b/b/e?ts=1")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "first"
    );
    let response = server.post("/b/b/e?ts=2").body("ok").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("connection").is_none());
}
