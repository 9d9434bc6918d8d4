use integration_tests::{TestServer, error_detail};

#[tokio::test]
async fn info_counts_buckets_usage_and_record_times() {
    let server = TestServer::start().await;
    let info = server.json("/info").await;
    assert_eq!(info["bucket_count"], 0);
    assert_eq!(info["usage"], 0);
    assert_eq!(info["oldest_record"], 0);
    assert_eq!(info["latest_record"], 0);
    assert!(info["version"].as_str().unwrap().split('.').count() == 3);
    assert!(info["uptime"].is_u64());
    assert_eq!(
        info["defaults"]["bucket"],
        serde_json::json!({"max_block_size": 64000000, "max_block_records": 1024, "quota_type": "NONE", "quota_size": 0})
    );

    server.create_bucket("a", "").await;
    server.create_bucket("b", "").await;
    server.write("a", "e", 20, "12345").await;
    server.write("b", "e", 10, "123").await;
    server.write("b", "f", 30, "").await;
    let info = server.json("/info").await;
    assert_eq!(info["bucket_count"], 2);
    assert_eq!(info["usage"], 8);
    assert_eq!(info["oldest_record"], 10);
    assert_eq!(info["latest_record"], 30);
}

#[tokio::test]
async fn list_is_sorted_by_name_with_statistics() {
    let server = TestServer::start().await;
    for name in ["zeta", "alpha", "mid"] {
        server.create_bucket(name, "").await;
    }
    server.write("mid", "e1", 5, "abc").await;
    server.write("mid", "e2", 7, "de").await;
    let list = server.json("/list").await;
    let buckets = list["buckets"].as_array().unwrap();
    let names: Vec<&str> = buckets.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(
        buckets[1],
        serde_json::json!({"name": "mid", "size": 5, "entry_count": 2, "oldest_record": 5, "latest_record": 7})
    );
    assert_eq!(buckets[0]["entry_count"], 0);
}

#[tokio::test]
async fn alive_answers_get_and_head_with_an_empty_body() {
    let server = TestServer::start().await;
    let response = server.get("/alive").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "");
    assert_eq!(server.head("/alive").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn every_response_names_the_api_level_and_the_server() {
    let server = TestServer::start().await;
    for response in [
        server.get("/info").send().await.unwrap(),
        server.get("/b/missing").send().await.unwrap(),
        server.get("/nowhere").send().await.unwrap(),
    ] {
        assert_eq!(response.headers()["x-reduct-api"], "1.0");
        assert!(
            response.headers()["server"]
                .to_str()
                .unwrap()
                .starts_with("reductstore-rs ")
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_not_found() {
    let server = TestServer::start().await;
    let response = server.get("/nowhere").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Not found");
    let response = server
        .client
        .get(format!("http://{}/other", server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = server.client.patch(server.url("/info")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Not found");
}

#[tokio::test]
async fn a_token_guards_everything_but_alive() {
    let server = TestServer::start_with(&["--api-token", "s3cret"]).await;
    let response = server.get("/info").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(error_detail(response).await, "No bearer token in request header");

    let response = server
        .get("/info")
        .header("authorization", "Basic czNjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(error_detail(response).await, "No bearer token in request header");

    let response = server.get("/list").bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(error_detail(response).await, "Invalid token");

    let response = server.post("/b/x").bearer_auth("s3cre").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        server
            .get("/b/x")
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    assert_eq!(
        server
            .get("/info")
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.get("/alive").send().await.unwrap().status(), 200);
    assert_eq!(server.head("/alive").send().await.unwrap().status(), 200);
    assert_eq!(server.get("/nowhere").send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn cors_echoes_allowed_origins_only() {
    let server = TestServer::start().await;
    let response = server
        .get("/info")
        .header("origin", "http://console.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://console.example"
    );

    let server = TestServer::start_with(&["--cors-allow-origin", "http://a.example,http://b.example"]).await;
    let response = server
        .get("/info")
        .header("origin", "http://b.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://b.example"
    );
    let response = server
        .get("/info")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none());
    let preflight = server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/b/x/e"))
        .header("origin", "http://a.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://a.example"
    );
}

#[tokio::test]
async fn a_base_path_prefixes_the_api() {
    let server = TestServer::start_with(&["--api-base-path", "/reduct/"]).await;
    let base = format!("http://{}", server.addr());
    let response = server
        .client
        .get(format!("{base}/reduct/api/v1/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server
        .client
        .get(format!("{base}/api/v1/info"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}
