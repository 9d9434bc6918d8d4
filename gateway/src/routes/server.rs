//! Server API: info, list of buckets, liveness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::HttpResult;

pub async fn info(State(state): State<AppState>) -> HttpResult<Json<Value>> {
    let info = state.storage.info().await?;
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "bucket_count": info.bucket_count,
        "usage": info.usage,
        "uptime": state.started.elapsed().as_secs(),
        "oldest_record": info.oldest_record,
        "latest_record": info.latest_record,
        "defaults": { "bucket": info.default_settings },
    })))
}

pub async fn list(State(state): State<AppState>) -> HttpResult<Json<Value>> {
    let mut buckets = state.storage.list_buckets().await?;
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "buckets": buckets })))
}

pub async fn alive() {}
