use std::sync::Arc;

use integration_tests::{TestServer, error_detail, files_under, payload};

#[tokio::test]
async fn a_flipped_byte_makes_that_record_a_500_and_its_neighbours_stay_readable() {
    let server = TestServer::start().await;
    server.create_bucket("b", "").await;
    for ts in 1..=3u64 {
        server.write("b", "e", ts, payload(ts, 3000)).await;
    }
    server.write("b", "e", 4, payload(4, 2 << 20)).await;
    // Damage the middle of record 2 and of the large record 4, where they sit in the block.
    let block = files_under(&server.data_path().join("blocks/b/e"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "blk"))
        .unwrap();
    let mut bytes = std::fs::read(&block).unwrap();
    for (ts, len) in [(2u64, 3000usize), (4, 2 << 20)] {
        let needle = payload(ts, len);
        let at = bytes
            .windows(64)
            .position(|w| w == &needle[..64])
            .expect("payload in the block");
        bytes[at + len / 2] ^= 0x40;
    }
    std::fs::write(&block, bytes).unwrap();

    for ts in [2u64, 4] {
        let response = server.get(&format!("/b/b/e?ts={ts}")).send().await.unwrap();
        assert_eq!(response.status(), 500);
        let detail = error_detail(response).await;
        assert!(detail.contains(&format!("Record {ts} is damaged")), "{detail}");
    }
    for ts in [1u64, 3] {
        let body = server.bytes(&format!("/b/b/e?ts={ts}")).await;
        assert_eq!(body.as_ref(), payload(ts, 3000).as_slice());
    }
}

#[tokio::test]
async fn racing_writes_of_one_timestamp_give_one_200_and_409_for_the_rest() {
    let server = Arc::new(TestServer::start().await);
    server.create_bucket("b", "").await;
    let mut racers = Vec::new();
    for i in 0..8u64 {
        let server = server.clone();
        racers.push(tokio::spawn(async move {
            let response = server
                .post("/b/b/e?ts=77")
                .body(payload(i, 50_000))
                .send()
                .await
                .unwrap();
            (i, response.status().as_u16())
        }));
    }
    let mut winners = Vec::new();
    for racer in racers {
        let (i, status) = racer.await.unwrap();
        match status {
            200 => winners.push(i),
            409 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let body = server.bytes("/b/b/e?ts=77").await;
    assert_eq!(body.as_ref(), payload(winners[0], 50_000).as_slice());
    assert_eq!(server.json("/b/b").await["entries"][0]["record_count"], 1);
}

#[tokio::test]
async fn a_deleted_index_is_rebuilt_from_the_blocks() {
    let server = TestServer::start().await;
    server
        .create_bucket(
            "b",
            r#"{"max_block_records": 4, "quota_type": "FIFO", "quota_size": 1000000000}"#,
        )
        .await;
    server.create_bucket("empty", "").await;
    for ts in 0..30u64 {
        let entry = if ts % 3 == 0 { "x" } else { "y" };
        server
            .write("b", entry, 1000 + ts, payload(ts, (ts as usize * 997) % 20_000))
            .await;
    }
    // An upload cut short leaves a discarded frame behind, which must not come back.
    let broken = futures::stream::iter(vec![
        Ok(bytes::Bytes::from(vec![1u8; 5000])),
        Err(std::io::Error::other("the client gives up")),
    ]);
    let result = server
        .post("/b/b/x?ts=5000")
        .header("content-length", "100000")
        .body(reqwest::Body::wrap_stream(broken))
        .send()
        .await;
    assert!(result.is_err() || result.is_ok_and(|r| r.status() == 400));
    let before_bucket = server.json("/b/b").await;
    let before_list = server.json("/list").await;
    let dir = server.stop().await;

    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let server = TestServer::start_in(dir, &[]).await;
    assert_eq!(server.json("/b/b").await, before_bucket);
    assert_eq!(server.json("/list").await, before_list);
    assert_eq!(server.get("/b/b/x?ts=5000").send().await.unwrap().status(), 404);
    for ts in 0..30u64 {
        let entry = if ts % 3 == 0 { "x" } else { "y" };
        let body = server.bytes(&format!("/b/b/{entry}?ts={}", 1000 + ts)).await;
        assert_eq!(
            body.as_ref(),
            payload(ts, (ts as usize * 997) % 20_000).as_slice()
        );
    }
}

#[tokio::test]
async fn every_acknowledgement_can_wait_for_the_disk() {
    let server = Arc::new(TestServer::start_with(&["--sync", "always"]).await);
    server.create_bucket("b", "").await;
    let mut writers = Vec::new();
    for writer in 0..4u64 {
        let server = server.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10u64 {
                server.write("b", "e", writer * 100 + i, payload(i, 2048)).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(server.json("/b/b").await["entries"][0]["record_count"], 40);
}
