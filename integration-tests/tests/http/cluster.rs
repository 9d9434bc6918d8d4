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
