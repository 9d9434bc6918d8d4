use integration_tests::{TestServer, payload};

#[tokio::test]
async fn fifo_keeps_the_bucket_under_quota_dropping_the_oldest() {
    let server = TestServer::start().await;
    let quota = 100_000u64;
    server
        .create_bucket(
            "fifo",
            &format!(r#"{{"max_block_size": 10000, "quota_type": "FIFO", "quota_size": {quota}}}"#),
        )
        .await;
    // 3x the quota in 1 KiB records, over two entries.
    let records = 300u64;
    for i in 0..records {
        let entry = if i % 2 == 0 { "a" } else { "b" };
        server.write("fifo", entry, 1000 + i, payload(i, 1000)).await;
        let size = server.json("/b/fifo").await["info"]["size"].as_u64().unwrap();
        assert!(size <= quota, "after record {i} the bucket holds {size} bytes");
    }
    let bucket = server.json("/b/fifo").await;
    let size = bucket["info"]["size"].as_u64().unwrap();
    assert!(size > quota / 2, "FIFO removed more than it needed: {size}");
    assert_eq!(server.json("/info").await["usage"].as_u64().unwrap(), size);
    // The newest records are readable, the oldest are gone.
    for i in records - 20..records {
        let entry = if i % 2 == 0 { "a" } else { "b" };
        let body = server.bytes(&format!("/b/fifo/{entry}?ts={}", 1000 + i)).await;
        assert_eq!(body.as_ref(), payload(i, 1000).as_slice());
    }
    for i in 0..20 {
        let entry = if i % 2 == 0 { "a" } else { "b" };
        let status = server
            .get(&format!("/b/fifo/{entry}?ts={}", 1000 + i))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "record {i} should be gone");
    }
    let oldest = bucket["info"]["oldest_record"].as_u64().unwrap();
    assert!(oldest > 1000 + 20);
    // The removed blocks' files are gone too.
    let files = integration_tests::files_under(&server.data_path().join("blocks").join("fifo")).len() as u64;
    let blocks: u64 = bucket["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["block_count"].as_u64().unwrap())
        .sum();
    assert!(files <= blocks + 2, "{files} files for {blocks} blocks");
}

#[tokio::test]
async fn lowering_the_quota_applies_at_once() {
    let server = TestServer::start().await;
    server.create_bucket("b", r#"{"max_block_records": 2}"#).await;
    for ts in 0..10u64 {
        server.write("b", "e", ts, vec![1u8; 100]).await;
    }
    let response = server
        .put("/b/b")
        .body(r#"{"quota_type": "FIFO", "quota_size": 450}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let info = &server.json("/b/b").await["info"];
    assert_eq!(info["size"], 400);
    assert_eq!(info["oldest_record"], 6);
}

#[tokio::test]
async fn a_query_skips_records_the_quota_removed_after_it_listed_them() {
    let server = TestServer::start().await;
    let settings = r#"{"max_block_records": 1, "quota_type": "FIFO", "quota_size": 4000}"#;
    server.create_bucket("b", settings).await;
    for ts in 1..=4u64 {
        server.write("b", "e", ts, payload(ts, 1000)).await;
    }
    let id = server.json("/b/b/e/q?stop=5").await["id"].as_u64().unwrap();
    // The first read lists records 1 to 4 in the query's page.
    let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.headers()["x-reduct-time"], "1");
    // This write makes the quota remove records 1 and 2; record 2 is still in the page.
    server.write("b", "e", 5, payload(5, 2000)).await;
    assert_eq!(server.get("/b/b/e?ts=2").send().await.unwrap().status(), 404);
    let response = server.get(&format!("/b/b/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-reduct-time"], "3");
}
