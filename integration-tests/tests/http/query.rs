use integration_tests::{TestServer, error_detail};

async fn query_id(server: &TestServer, path: &str) -> u64 {
    let body = server.json(path).await;
    body["id"].as_u64().expect("numeric id")
}

/// Reads a query to its end: (timestamp, last, body) of each record.
async fn read_all(server: &TestServer, bucket: &str, entry: &str, id: u64) -> Vec<(u64, bool, String)> {
    let mut records = Vec::new();
    loop {
        let response = server
            .get(&format!("/b/{bucket}/{entry}?q={id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let ts = response.headers()["x-reduct-time"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let last = response.headers()["x-reduct-last"] == "1";
        records.push((ts, last, response.text().await.unwrap()));
        if last {
            return records;
        }
        assert!(records.len() < 10_000, "the query never ends");
    }
}

async fn setup() -> TestServer {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    for ts in [10u64, 20, 30, 40, 50] {
        server.write("b", "e", ts, format!("r{ts}")).await;
    }
    server
}

#[tokio::test]
async fn a_query_reads_its_interval_in_order_then_is_finished() {
    let server = setup().await;
    let id = query_id(&server, "/b/b/e/q?start=20&stop=50").await;
    let records = read_all(&server, "b", "e", id).await;
    assert_eq!(
        records,
        vec![
            (20, false, "r20".into()),
            (30, false, "r30".into()),
            (40, true, "r40".into())
        ]
    );
    let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        error_detail(response).await,
        format!("Query {id} doesn't exist. It expired or was finished")
    );
}

#[tokio::test]
async fn open_ends_run_from_the_oldest_to_the_latest_record_inclusive() {
    let server = setup().await;
    let id = query_id(&server, "/b/b/e/q").await;
    let stamps: Vec<u64> = read_all(&server, "b", "e", id)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(stamps, [10, 20, 30, 40, 50]);
    let id = query_id(&server, "/b/b/e/q?start=35").await;
    let stamps: Vec<u64> = read_all(&server, "b", "e", id)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(stamps, [40, 50]);
    let id = query_id(&server, "/b/b/e/q?stop=20").await;
    let stamps: Vec<u64> = read_all(&server, "b", "e", id)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(stamps, [10]);
}

#[tokio::test]
async fn a_query_longer_than_a_page_reads_every_record() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    for ts in 0..700u64 {
        server.write("b", "e", ts * 3, ts.to_string()).await;
    }
    let id = query_id(&server, "/b/b/e/q?start=0&stop=2100").await;
    let records = read_all(&server, "b", "e", id).await;
    assert_eq!(records.len(), 700);
    for (i, (ts, last, body)) in records.iter().enumerate() {
        assert_eq!(*ts, i as u64 * 3);
        assert_eq!(*last, i == 699);
        assert_eq!(body, &i.to_string());
    }
}

#[tokio::test]
async fn an_empty_interval_gives_an_id_and_answers_202() {
    let server = setup().await;
    let id = query_id(&server, "/b/b/e/q?start=11&stop=19").await;
    for _ in 0..2 {
        let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
        assert_eq!(response.status(), 202);
        assert_eq!(response.text().await.unwrap(), "");
    }
}

#[tokio::test]
async fn q_wins_over_ts_and_head_reads_a_query_too() {
    let server = setup().await;
    let id = query_id(&server, "/b/b/e/q?start=30").await;
    let response = server.get(&format!("/b/b/e?ts=10&q={id}")).send().await.unwrap();
    assert_eq!(response.headers()["x-reduct-time"], "30");
    assert_eq!(response.headers()["x-reduct-last"], "0");
    let response = server.head(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-reduct-time"], "40");
    assert_eq!(response.headers()["content-length"], "3");
}

#[tokio::test]
async fn a_query_expires_after_its_ttl() {
    let server = setup().await;
    let id = query_id(&server, "/b/b/e/q?ttl=1").await;
    let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // Not a wait for the server: the TTL itself is what is tested, and it only has to have passed.
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        error_detail(response).await,
        format!("Query {id} doesn't exist. It expired or was finished")
    );
}

#[tokio::test]
async fn query_errors() {
    let server = setup().await;
    let response = server.get("/b/nope/e/q").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'nope' is not found");
    let response = server.get("/b/b/other/q").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Entry 'other' is not found");
    for (query, bad) in [
        ("start=x", "'x'"),
        ("stop=-4", "'-4'"),
        ("ttl=soon", "'soon'"),
        ("ttl=-1", "'-1'"),
    ] {
        let response = server.get(&format!("/b/b/e/q?{query}")).send().await.unwrap();
        assert_eq!(response.status(), 422, "{query}");
        let detail = error_detail(response).await;
        assert!(detail.contains(bad), "{detail}");
    }
    let response = server.get("/b/b/e/q?start=30&stop=20").send().await.unwrap();
    assert_eq!(response.status(), 422);
    let response = server.get("/b/b/e?q=999999").send().await.unwrap();
    assert_eq!(response.status(), 404);
    // A query is read through its own bucket and entry only.
    server.write("b", "f", 1, "x").await;
    let id = query_id(&server, "/b/b/e/q").await;
    assert_eq!(
        server
            .get(&format!("/b/b/f?q={id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        server
            .get(&format!("/b/b/e?q={id}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn ids_are_unique_and_increase() {
    let server = setup().await;
    let a = query_id(&server, "/b/b/e/q").await;
    let b = query_id(&server, "/b/b/e/q").await;
    assert!(b > a);
}

#[tokio::test]
async fn live_queries_are_capped() {
    let server = TestServer::start_with(&["--max-queries", "2"]).await;
    server.create_bucket("b", "").await;
    server.write("b", "e", 1, "x").await;
    query_id(&server, "/b/b/e/q").await;
    let id = query_id(&server, "/b/b/e/q").await;
    let response = server.get("/b/b/e/q").send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(error_detail(response).await.contains("limit is 2"));
    // Finishing a query frees its place.
    read_all(&server, "b", "e", id).await;
    query_id(&server, "/b/b/e/q").await;
}

#[tokio::test]
async fn a_start_past_the_latest_record_without_a_stop_is_an_empty_query() {
    let server = setup().await;
    let id = query_id(&server, "/b/b/e/q?start=1000").await;
    let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 202);
}
