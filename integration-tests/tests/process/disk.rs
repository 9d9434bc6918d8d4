use std::path::Path;
use std::process::Stdio;

use integration_tests::process::ServerProcess;
use integration_tests::{error_detail, get_bytes, get_json, payload};

use crate::server_binary;

/// Starts the server with its data on a tmpfs of `size` in a mount namespace of its own, so the
/// test can fill the disk without touching the machine's.
async fn spawn_on_small_disk(mount_point: &Path, size: &str, flags: &[&str]) -> ServerProcess {
    let script = r#"mount -t tmpfs -o size="$1" tmpfs "$2" && dir="$2" && bin="$3" && shift 3 && exec "$bin" --port 0 --data-path "$dir" "$@""#;
    let mount_point = mount_point.to_string_lossy().into_owned();
    let binary = server_binary().to_string_lossy().into_owned();
    let mut args = vec![
        "--mount",
        "--map-root-user",
        "sh",
        "-c",
        script,
        "sh",
        size,
        &mount_point,
        &binary,
    ];
    args.extend_from_slice(flags);
    ServerProcess::spawn(Path::new("unshare"), &args)
        .await
        .expect("the server starts in its own mount namespace")
}

async fn post(client: &reqwest::Client, url: String, body: Vec<u8>) -> reqwest::Response {
    client.post(url).body(body).send().await.expect("request")
}

async fn fill_until_refused(client: &reqwest::Client, base: &str) -> (u16, String) {
    for i in 0..200u64 {
        let response = post(client, format!("{base}/b/filler/e?ts={i}"), payload(i, 1 << 20)).await;
        if response.status() != 200 {
            let status = response.status().as_u16();
            return (status, error_detail(response).await);
        }
    }
    panic!("200 MiB went into a 48 MiB disk");
}

async fn check_kept(client: &reqwest::Client, base: &str) {
    for ts in 0..5u64 {
        let body = get_bytes(client, format!("{base}/b/keep/e?ts={ts}")).await;
        assert_eq!(
            body.as_ref(),
            payload(100 + ts, 10_000).as_slice(),
            "kept record {ts}"
        );
    }
}

/// Fills the disk, checks the refusal, frees space by removing the filler bucket, writes again.
async fn full_disk_round(flags: &[&str], expected_detail: &str) {
    let mount_point = tempfile::tempdir().unwrap();
    let server = spawn_on_small_disk(mount_point.path(), "48m", flags).await;
    let base = format!("http://{}/api/v1", server.addr);
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .post(format!("{base}/b/keep"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for ts in 0..5u64 {
        let response = post(
            &client,
            format!("{base}/b/keep/e?ts={ts}"),
            payload(100 + ts, 10_000),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        client
            .post(format!("{base}/b/filler"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (status, detail) = fill_until_refused(&client, &base).await;
    assert_eq!(status, 507, "{detail}");
    assert!(detail.contains(expected_detail), "{detail}");
    check_kept(&client, &base).await;

    // Space comes back: writing works again, and nothing was lost on the way.
    assert_eq!(
        client
            .delete(format!("{base}/b/filler"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = post(&client, format!("{base}/b/keep/e?ts=99"), payload(1, 1 << 20)).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    check_kept(&client, &base).await;
    let info: serde_json::Value = get_json(&client, format!("{base}/info")).await;
    assert_eq!(info["usage"], 5 * 10_000 + (1 << 20));
}

#[tokio::test]
async fn a_write_that_would_fill_the_disk_is_refused_and_the_server_recovers() {
    full_disk_round(&["--min-free-space", "8388608"], "Not enough free space").await;
}

#[tokio::test]
async fn a_disk_that_is_really_full_answers_507_and_the_server_recovers() {
    full_disk_round(&["--min-free-space", "0"], "no space left on device").await;
}

#[tokio::test]
async fn a_read_only_disk_is_a_clear_error_and_reads_go_on() {
    let mount_point = tempfile::tempdir().unwrap();
    let server = spawn_on_small_disk(mount_point.path(), "16m", &["--min-free-space", "0"]).await;
    let base = format!("http://{}/api/v1", server.addr);
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .post(format!("{base}/b/keep"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = post(&client, format!("{base}/b/keep/e?ts=1"), payload(1, 5000)).await;
    assert_eq!(response.status(), 200);

    // The bucket's directory becomes read-only (a read-only bind mount over it, made inside the
    // server's mount namespace; files already open stay as they were, as on a real remount).
    let pid = server.child.id().expect("pid").to_string();
    let target = mount_point
        .path()
        .join("blocks")
        .join("keep")
        .to_string_lossy()
        .into_owned();
    for mount_args in [
        vec!["--bind", target.as_str(), target.as_str()],
        vec!["-o", "remount,bind,ro", target.as_str()],
    ] {
        let status = tokio::process::Command::new("nsenter")
            .args([
                "--target",
                &pid,
                "--user",
                "--mount",
                "--preserve-credentials",
                "mount",
            ])
            .args(&mount_args)
            .stdout(Stdio::null())
            .status()
            .await
            .expect("nsenter runs");
        assert!(status.success(), "mount {mount_args:?} failed");
    }

    let response = post(&client, format!("{base}/b/keep/new?ts=2"), payload(2, 5000)).await;
    assert_eq!(response.status(), 500);
    let detail = error_detail(response).await;
    assert!(detail.contains("Read-only file system"), "{detail}");
    let body = get_bytes(&client, format!("{base}/b/keep/e?ts=1")).await;
    assert_eq!(body.as_ref(), payload(1, 5000).as_slice());
}
