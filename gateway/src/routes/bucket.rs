//! Bucket API.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use proto::types::{BucketDetails, BucketSettingsPatch, QuotaType};
use serde_json::Value;

use crate::AppState;
use crate::error::{Error, HttpResult};
use crate::extract::PathParams;

pub async fn create(
    State(state): State<AppState>,
    PathParams(bucket): PathParams<String>,
    body: Bytes,
) -> HttpResult<()> {
    let settings = parse_settings(&body)?;
    state.storage.create_bucket(&bucket, settings).await?;
    Ok(())
}

pub async fn get(
    State(state): State<AppState>,
    PathParams(bucket): PathParams<String>,
) -> HttpResult<Json<BucketDetails>> {
    Ok(Json(state.storage.get_bucket(&bucket).await?))
}

pub async fn head(State(state): State<AppState>, PathParams(bucket): PathParams<String>) -> HttpResult<()> {
    state.storage.get_bucket(&bucket).await?;
    Ok(())
}

pub async fn update(
    State(state): State<AppState>,
    PathParams(bucket): PathParams<String>,
    body: Bytes,
) -> HttpResult<()> {
    let settings = parse_settings(&body)?;
    state.storage.update_bucket(&bucket, settings).await?;
    Ok(())
}

pub async fn remove(State(state): State<AppState>, PathParams(bucket): PathParams<String>) -> HttpResult<()> {
    state.storage.remove_bucket(&bucket).await?;
    Ok(())
}

/// Settings as JSON, any subset of the fields, numbers also as numeric strings (old clients send
/// them so). An empty body means "all defaults". The content type is not checked: old clients
/// send `text/plain`.
pub fn parse_settings(body: &[u8]) -> Result<BucketSettingsPatch, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BucketSettingsPatch::default());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::unprocessable(format!("Invalid JSON in settings: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(Error::unprocessable("Settings must be a JSON object"));
    };
    let number = |name: &str| -> Result<Option<u64>, Error> {
        let bad = |v: &Value| {
            Error::unprocessable(format!(
                "Bad value {v} of '{name}': it must be an unsigned integer"
            ))
        };
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad(&Value::Number(n.clone()))),
            Some(Value::String(s)) => s
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| bad(&Value::String(s.clone()))),
            Some(other) => Err(bad(other)),
        }
    };
    let quota_type =
        match fields.get("quota_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(QuotaType::parse(name).ok_or_else(|| {
                Error::unprocessable(format!("Unknown quota_type '{name}': use NONE or FIFO"))
            })?),
            Some(other) => {
                return Err(Error::unprocessable(format!(
                    "Unknown quota_type {other}: use NONE or FIFO"
                )));
            }
        };
    Ok(BucketSettingsPatch {
        max_block_size: number("max_block_size")?,
        max_block_records: number("max_block_records")?,
        quota_type,
        quota_size: number("quota_size")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_accept_subsets_numbers_and_numeric_strings() {
        assert_eq!(parse_settings(b"").unwrap(), BucketSettingsPatch::default());
        let patch =
            parse_settings(br#"{"max_block_size": "1000", "quota_type": "FIFO", "quota_size": 5}"#).unwrap();
        assert_eq!(
            patch,
            BucketSettingsPatch {
                max_block_size: Some(1000),
                max_block_records: None,
                quota_type: Some(QuotaType::Fifo),
                quota_size: Some(5)
            }
        );
    }

    #[test]
    fn bad_settings_name_the_bad_value() {
        let error = parse_settings(br#"{"quota_type": "SOMETIMES"}"#).unwrap_err();
        assert!(error.message.contains("'SOMETIMES'"), "{error}");
        let error = parse_settings(br#"{"max_block_size": -5}"#).unwrap_err();
        assert!(error.message.contains("-5"), "{error}");
        assert!(parse_settings(b"{not json").is_err());
        assert!(parse_settings(b"[1]").is_err());
    }
}
