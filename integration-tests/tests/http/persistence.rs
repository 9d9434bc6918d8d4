use integration_tests::{TestServer, payload};
use serde_json::json;

#[tokio::test]
async fn buckets_settings_records_and_statistics_survive_a_restart() {
    let server = TestServer::start().await;
    server
        .create_bucket(
            "cams",
            r#"{"max_block_records": 3, "quota_type": "FIFO", "quota_size": 100000000}"#,
        )
        .await;
    server.create_bucket("empty", "").await;
    for ts in 1..=10u64 {
        server
            .write("cams", "front", ts * 100, payload(ts, ts as usize * 100))
            .await;
    }
    server.write("cams", "back", 5, "").await;
    let before_bucket = server.json("/b/cams").await;
    let before_list = server.json("/list").await;
    let before_id = server.json("/b/cams/front/q").await["id"].as_u64().unwrap();
    let dir = server.stop().await;

    let server = TestServer::start_in(dir, &[]).await;
    assert_eq!(server.json("/b/cams").await, before_bucket);
    assert_eq!(server.json("/list").await, before_list);
    assert_eq!(
        before_bucket["entries"][1],
        json!({"name": "front", "size": 5500, "record_count": 10, "block_count": 4, "oldest_record": 100, "latest_record": 1000})
    );
    for ts in 1..=10u64 {
        let body = server.bytes(&format!("/b/cams/front?ts={}", ts * 100)).await;
        assert_eq!(body.as_ref(), payload(ts, ts as usize * 100).as_slice());
    }
    // New records go on after the old ones, in new blocks.
    server.write("cams", "front", 2000, "new").await;
    assert_eq!(server.json("/b/cams").await["entries"][1]["record_count"], 11);
    assert_eq!(
        server
            .get("/b/cams/front")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "new"
    );
    // A restarted server never hands out an id a client may still hold.
    let after_id = server.json("/b/cams/front/q").await["id"].as_u64().unwrap();
    assert!(after_id > before_id);
}
