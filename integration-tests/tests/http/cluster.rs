use integration_tests::cluster::Cluster;
use integration_tests::{error_detail, payload};

#[tokio::test]
async fn gateways_share_buckets_records_and_queries_through_the_services() {
    let cluster = Cluster::start().await;
    let a = cluster.gateway().await;
    let b = cluster.gateway().await;

    a.create_bucket("shared", r#"{"max_block_size": 100000}"#).await;
    assert_eq!(b.json("/b/shared").await["settings"]["max_block_size"], 100000);
    let big = payload(9, 3 * 1024 * 1024 + 17);
    a.write("shared", "e", 1, "one").await;
    a.write("shared", "e", 2, big.clone()).await;
    b.write("shared", "e", 3, "three").await;

    let response = b.get("/b/shared/e?ts=2").send().await.unwrap();
    assert_eq!(
        response.headers()["content-length"],
        big.len().to_string().as_str()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), big.as_slice());

    // A query created through one gateway is read to its end through the other.
    let id = a.json("/b/shared/e/q").await["id"].as_u64().unwrap();
    let mut seen = Vec::new();
    loop {
        let response = b.get(&format!("/b/shared/e?q={id}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let ts: u64 = response.headers()["x-reduct-time"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let last = response.headers()["x-reduct-last"] == "1";
        seen.push(ts);
        if last {
            break;
        }
    }
    assert_eq!(seen, [1, 2, 3]);
    let response = a.get(&format!("/b/shared/e?q={id}")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Errors keep their status and message across the hops.
    let response = b.get("/b/none/e?ts=1").send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_detail(response).await, "Bucket 'none' is not found");
    let response = a.post("/b/shared/e?ts=1").body("again").send().await.unwrap();
    assert_eq!(response.status(), 409);
}

/// A guard against a hang: far longer than the clients' own bounds.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), future)
        .await
        .expect("no answer: the gateway hangs")
}

#[tokio::test]
async fn a_stopped_storage_node_is_a_503_naming_it_and_the_gateway_recovers_by_itself() {
    let mut cluster = Cluster::start().await;
    let gateway = cluster.gateway().await;
    gateway.create_bucket("b", "").await;
    gateway.write("b", "e", 1, "written before").await;

    cluster.stop_storage().await;
    for response in [
        bounded(gateway.get("/b/b/e?ts=1").send()).await.unwrap(),
        bounded(gateway.post("/b/b/e?ts=2").body("x").send())
            .await
            .unwrap(),
        bounded(gateway.get("/info").send()).await.unwrap(),
        bounded(gateway.get("/b/b/e/q").send()).await.unwrap(),
    ] {
        assert_eq!(response.status(), 503);
        let detail = error_detail(response).await;
        assert!(
            detail.contains(&format!("Storage node at {} is unavailable", cluster.storage_url)),
            "{detail}"
        );
    }

    cluster.start_storage().await;
    let response = bounded(gateway.get("/b/b/e?ts=1").send()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "written before");
    gateway.write("b", "e", 2, "written after").await;
}

#[tokio::test]
async fn a_restarted_query_service_forgets_its_queries_and_never_reuses_an_id() {
    let mut cluster = Cluster::start().await;
    let gateway = cluster.gateway().await;
    gateway.create_bucket("b", "").await;
    for ts in 1..=3 {
        gateway.write("b", "e", ts, "x").await;
    }
    let old = gateway.json("/b/b/e/q").await["id"].as_u64().unwrap();
    assert_eq!(
        gateway
            .get(&format!("/b/b/e?q={old}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    cluster.stop_query().await;
    let response = bounded(gateway.get(&format!("/b/b/e?q={old}")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let detail = error_detail(response).await;
    assert!(
        detail.contains(&format!("Query service at {} is unavailable", cluster.query_url)),
        "{detail}"
    );

    cluster.start_query().await;
    let response = bounded(gateway.get(&format!("/b/b/e?q={old}")).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let new = gateway.json("/b/b/e/q").await["id"].as_u64().unwrap();
    assert!(new > old, "id {new} after {old}");
}

#[tokio::test]
async fn both_services_answer_the_standard_grpc_health_check() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let cluster = Cluster::start().await;
    for (url, service) in [
        (&cluster.storage_url, "storage.v1.Storage"),
        (&cluster.query_url, "query.v1.Query"),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        for name in ["", service] {
            let request = HealthCheckRequest {
                service: name.to_string(),
            };
            let status = client.check(request).await.unwrap().into_inner().status;
            assert_eq!(status, ServingStatus::Serving as i32, "{url} {name:?}");
        }
    }
}
