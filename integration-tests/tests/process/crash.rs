use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use integration_tests::{get_json, payload};

use crate::spawn;

/// Record sizes from empty to several MiB.
fn size_of(ts: u64) -> usize {
    match ts % 7 {
        0 => 0,
        1 | 2 => 1024,
        3 => 100 * 1024,
        4 => 700 * 1024,
        5 => 3 * 1024 * 1024 + 11,
        _ => 37,
    }
}

#[derive(Default)]
struct Log {
    /// Timestamp -> whether the write was acknowledged with 200.
    written: BTreeMap<u64, bool>,
    acknowledged_this_round: usize,
}

/// Checks every record ever attempted: an acknowledged one reads back byte for byte; one that was
/// not may be missing or whole, never partial or damaged. Returns how many are readable.
async fn verify(base: &str, log: &Log) -> u64 {
    let client = reqwest::Client::new();
    let mut readable = 0;
    for (&ts, &acknowledged) in &log.written {
        let response = client
            .get(format!("{base}/b/crash/e?ts={ts}"))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => {
                let body = response.bytes().await.unwrap();
                assert_eq!(body.len(), size_of(ts), "record {ts} has the wrong length");
                assert!(
                    body.as_ref() == payload(ts, size_of(ts)).as_slice(),
                    "record {ts} differs"
                );
                readable += 1;
            }
            404 => assert!(!acknowledged, "acknowledged record {ts} is lost"),
            status => panic!(
                "record {ts}: unexpected status {status}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    readable
}

#[tokio::test]
async fn acknowledged_records_survive_repeated_kills_and_partial_ones_never_show() {
    let data = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let rounds = 6u64;
    for round in 0..=rounds {
        let sync = if round % 2 == 0 { "interval" } else { "always" };
        let mut server = spawn(data.path(), &["--sync", sync]).await;
        let base = format!("http://{}/api/v1", server.addr);
        let client = reqwest::Client::new();
        if round == 0 {
            let settings = r#"{"max_block_size": 2000000, "max_block_records": 40}"#;
            let response = client
                .post(format!("{base}/b/crash"))
                .body(settings)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        let snapshot = Log {
            written: log.lock().unwrap().written.clone(),
            acknowledged_this_round: 0,
        };
        let readable = verify(&base, &snapshot).await;
        if readable > 0 {
            let bucket: serde_json::Value = get_json(&client, format!("{base}/b/crash")).await;
            assert_eq!(
                bucket["entries"][0]["record_count"], readable,
                "statistics after recovery"
            );
        }
        if round == rounds {
            break;
        }

        // Several writers at once; the server is killed once this round has a set number of
        // acknowledgements (a different number each round), in the middle of other writes.
        log.lock().unwrap().acknowledged_this_round = 0;
        let kill_after = 8 + round as usize * 7;
        let (killed_tx, killed) = tokio::sync::watch::channel(false);
        let acknowledged = Arc::new(tokio::sync::Notify::new());
        let mut writers = Vec::new();
        for writer in 0..6u64 {
            let (log, base, client, mut killed) = (log.clone(), base.clone(), client.clone(), killed.clone());
            let acknowledged = acknowledged.clone();
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    if *killed.borrow() {
                        return;
                    }
                    let ts = round * 1_000_000 + writer * 10_000 + i;
                    log.lock().unwrap().written.insert(ts, false);
                    let request = client
                        .post(format!("{base}/b/crash/e?ts={ts}"))
                        .body(payload(ts, size_of(ts)))
                        .send();
                    let response = tokio::select! {
                        response = request => response,
                        _ = killed.wait_for(|k| *k) => return,
                    };
                    match response {
                        Ok(response) if response.status() == 200 => {
                            let mut log = log.lock().unwrap();
                            log.written.insert(ts, true);
                            log.acknowledged_this_round += 1;
                            acknowledged.notify_one();
                        }
                        _ => return,
                    }
                }
            }));
        }
        let enough = async {
            while log.lock().unwrap().acknowledged_this_round < kill_after {
                acknowledged.notified().await;
            }
        };
        // A bound for a broken server, not a timing: a working one gets there in well under it.
        tokio::time::timeout(std::time::Duration::from_secs(300), enough)
            .await
            .expect("the writers stopped getting acknowledgements");
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        killed_tx.send(true).unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }
    let log = log.lock().unwrap();
    let acknowledged = log.written.values().filter(|a| **a).count();
    assert!(
        acknowledged >= 6 * 8,
        "only {acknowledged} records were acknowledged"
    );
}

#[tokio::test]
async fn an_index_lost_with_the_process_is_rebuilt_from_the_blocks_and_the_log_says_so() {
    let data = tempfile::tempdir().unwrap();
    let mut server = spawn(data.path(), &[]).await;
    let base = format!("http://{}/api/v1", server.addr);
    let client = reqwest::Client::new();
    let settings = r#"{"max_block_records": 5}"#;
    let response = client
        .post(format!("{base}/b/crash"))
        .body(settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut log = Log::default();
    for ts in 0..40u64 {
        let url = format!("{base}/b/crash/e?ts={ts}");
        let response = client
            .post(url)
            .body(payload(ts, size_of(ts)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        log.written.insert(ts, true);
    }
    let before = get_json(&client, format!("{base}/b/crash")).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    std::fs::remove_dir_all(data.path().join("index")).unwrap();

    let server = spawn(data.path(), &[]).await;
    let lines = server.log();
    let said = lines
        .iter()
        .any(|line| line.contains("no index found: rebuilding it from the block files"));
    assert!(said, "{lines:#?}");
    let base = format!("http://{}/api/v1", server.addr);
    assert_eq!(verify(&base, &log).await, 40);
    let after = get_json(&client, format!("{base}/b/crash")).await;
    assert_eq!(after, before);
}
