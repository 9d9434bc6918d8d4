use integration_tests::{TestServer, error_detail, files_under};
use serde_json::json;

#[tokio::test]
async fn create_with_defaults_partial_settings_and_numeric_strings() {
    let server = TestServer::start().await;
    server.create_bucket("plain", "").await;
    let bucket = server.json("/b/plain").await;
    assert_eq!(
        bucket["settings"],
        json!({"max_block_size": 64000000, "max_block_records": 1024, "quota_type": "NONE", "quota_size": 0})
    );
    assert_eq!(
        bucket["info"],
        json!({"name": "plain", "entry_count": 0, "size": 0, "oldest_record": 0, "latest_record": 0})
    );
    assert_eq!(bucket["entries"], json!([]));

    // Old clients send numbers as strings, with a text/plain content type.
    let response = server
        .post("/b/old_client")
        .header("content-type", "text/plain")
        .body(r#"{"max_block_size": "1000", "quota_type": "FIFO", "quota_size": "5000"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bucket = server.json("/b/old_client").await;
    assert_eq!(
        bucket["settings"],
        json!({"max_block_size": 1000, "max_block_records": 1024, "quota_type": "FIFO", "quota_size": 5000})
    );
}

#[tokio::test]
async fn create_refuses_duplicates_bad_json_bad_quota_and_bad_names() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    let response = server.post("/b/b").send().await.unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(error_detail(response).await, "Bucket 'b' already exists");

    let response = server.post("/b/c").body("{oops").send().await.unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("Invalid JSON"));

    let response = server
        .post("/b/c")
        .body(r#"{"quota_type": "SOMETIMES"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("'SOMETIMES'"));

    let response = server
        .post("/b/c")
        .body(r#"{"max_block_records": "many"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert!(error_detail(response).await.contains("many"));

    for bad in ["bad.name", "sp%20ace", "%C3%A9t%C3%A9"] {
        let response = server.post(&format!("/b/{bad}")).send().await.unwrap();
        assert_eq!(response.status(), 422, "{bad}");
        let detail = error_detail(response).await;
        assert!(detail.starts_with("Bucket name '"), "{detail}");
    }
    assert_eq!(server.head("/b/c").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn get_head_and_missing_buckets() {
    let server = TestServer::start().await;
    let response = server.get("/b/nope").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'nope' is not found");
    let response = server.head("/b/nope").send().await.unwrap();
    assert_eq!(response.status(), 404);
    server.create_bucket("yes", "").await;
    let response = server.head("/b/yes").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "");
}

#[tokio::test]
async fn entries_are_listed_by_name_with_exact_statistics() {
    let server = TestServer::start().await;
    server.create_bucket("b", r#"{"max_block_records": 2}"#).await;
    for (ts, body) in [(30, "xyz"), (10, "a"), (20, "bc")] {
        server.write("b", "zz", ts, body).await;
    }
    server.write("b", "aa", 100, "").await;
    let bucket = server.json("/b/b").await;
    assert_eq!(
        bucket["entries"],
        json!([
            {"name": "aa", "size": 0, "record_count": 1, "block_count": 1, "oldest_record": 100, "latest_record": 100},
            {"name": "zz", "size": 6, "record_count": 3, "block_count": 2, "oldest_record": 10, "latest_record": 30},
        ])
    );
    assert_eq!(
        bucket["info"],
        json!({"name": "b", "entry_count": 2, "size": 6, "oldest_record": 10, "latest_record": 100})
    );
}

#[tokio::test]
async fn put_merges_settings() {
    let server = TestServer::start().await;
    server.create_bucket("b", r#"{"max_block_records": 10}"#).await;
    let response = server
        .put("/b/b")
        .body(r#"{"quota_type": "FIFO", "quota_size": 1000000}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bucket = server.json("/b/b").await;
    assert_eq!(
        bucket["settings"],
        json!({"max_block_size": 64000000, "max_block_records": 10, "quota_type": "FIFO", "quota_size": 1000000})
    );
    let response = server
        .put("/b/b")
        .body(r#"{"quota_type": "BIG"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = server
        .put("/b/b")
        .body(r#"{"max_block_size": 0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = server.put("/b/none").body("{}").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'none' is not found");
    assert_eq!(server.json("/b/b").await["settings"]["max_block_size"], 64000000);
}

#[tokio::test]
async fn delete_removes_the_bucket_and_its_files() {
    let server = TestServer::start().await;
    server.create_bucket("gone", "").await;
    server.create_bucket("kept", "").await;
    server.write("gone", "e", 1, vec![7u8; 4096]).await;
    server.write("kept", "e", 1, "keep").await;
    let gone_dir = server.data_path().join("blocks").join("gone");
    assert!(!files_under(&gone_dir).is_empty());

    assert_eq!(server.delete("/b/gone").send().await.unwrap().status(), 200);
    assert!(files_under(&gone_dir).is_empty());
    assert!(!gone_dir.exists());
    let response = server.get("/b/gone").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(server.get("/b/gone/e?ts=1").send().await.unwrap().status(), 404);
    let response = server.delete("/b/gone").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'gone' is not found");
    assert_eq!(
        server
            .get("/b/kept/e?ts=1")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "keep"
    );

    // The name is free again, and the new bucket starts empty.
    server.create_bucket("gone", "").await;
    assert_eq!(server.json("/b/gone").await["entries"], json!([]));
    assert_eq!(server.json("/info").await["usage"], 4);
}
