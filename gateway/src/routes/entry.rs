//! Entry API: write a record, read one by time, latest or through a query, and create queries.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use proto::types::{QueryRequest, RecordInfo, WriteRecord, is_valid_name};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{Error, HttpResult};
use crate::extract::{Params, PathParams};

const DEFAULT_QUERY_TTL: u64 = 5;
/// Level 1 always answers records as octet streams.
const RECORD_CONTENT_TYPE: &str = "application/octet-stream";

fn check_entry_name(entry: &str) -> Result<(), Error> {
    if is_valid_name(entry) {
        Ok(())
    } else {
        Err(Error::unprocessable(format!(
            "Entry name '{entry}' is invalid: only letters, digits, '_' and '-' are allowed"
        )))
    }
}

pub async fn write(
    State(state): State<AppState>,
    PathParams((bucket, entry)): PathParams<(String, String)>,
    params: Params,
    request: Request,
) -> HttpResult<()> {
    check_entry_name(&entry)?;
    let timestamp = params
        .timestamp("ts")?
        .ok_or_else(|| Error::unprocessable("'ts' parameter is required"))?;
    let headers = request.headers();
    let content_length = content_length(headers, request.body().size_hint().exact())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or(RECORD_CONTENT_TYPE)
        .to_string();
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(|e| Error::bad_request(format!("Cannot read the request body: {e}")));
    let record = WriteRecord {
        bucket,
        entry,
        timestamp,
        content_length,
        content_type,
    };
    state.storage.write_record(record, Box::pin(body)).await?;
    Ok(())
}

/// The announced length of the body. A request without Content-Length is accepted only when its
/// framing says the body is empty; a chunked upload without a length is refused, since the space
/// for a record is reserved up front.
fn content_length(headers: &HeaderMap, framed_length: Option<u64>) -> Result<u64, Error> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return match framed_length {
            Some(0) => Ok(0),
            _ => Err(Error::new(
                proto::ErrorKind::LengthRequired,
                "Content-Length header is required",
            )),
        };
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::bad_request(format!(
                "Bad Content-Length '{}'",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })
}

/// What a read asks for: the next record of a query, a record by time, or the latest.
#[derive(Clone, Copy)]
enum Target {
    Query(u64),
    Time(Option<u64>),
}

fn target(params: &Params) -> Result<Target, Error> {
    match params.unsigned("q", "query id")? {
        Some(id) => Ok(Target::Query(id)),
        None => Ok(Target::Time(params.timestamp("ts")?)),
    }
}

fn record_headers(response: &mut Response, info: &RecordInfo, last: bool) {
    let headers = response.headers_mut();
    headers.insert("x-reduct-time", HeaderValue::from(info.timestamp));
    headers.insert(
        "x-reduct-last",
        HeaderValue::from_static(if last { "1" } else { "0" }),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(RECORD_CONTENT_TYPE),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
}

/// Resolves the target to a timestamp (`None`: the latest) and whether it is the last record,
/// advancing the query; `None` when a query has no (more) records.
async fn resolve(
    state: &AppState,
    bucket: &str,
    entry: &str,
    target: Target,
) -> HttpResult<Option<(Option<u64>, bool)>> {
    match target {
        Target::Time(ts) => Ok(Some((ts, true))),
        Target::Query(id) => {
            let next = state.query.next(id, bucket, entry).await?;
            Ok(next.map(|next| (Some(next.timestamp), next.last)))
        }
    }
}

/// `GET` answers the record with its payload; `HEAD` the same headers without opening it.
pub async fn read(
    State(state): State<AppState>,
    method: Method,
    PathParams((bucket, entry)): PathParams<(String, String)>,
    params: Params,
) -> HttpResult<Response> {
    check_entry_name(&entry)?;
    let target = target(&params)?;
    // A query lists records before they are read; the FIFO quota may remove one in between.
    // The query then goes on to its next record rather than failing.
    let mut skipped = 0;
    loop {
        let Some((timestamp, last)) = resolve(&state, &bucket, &entry, target).await? else {
            return Ok(StatusCode::ACCEPTED.into_response());
        };
        let fetched = if method == Method::HEAD {
            let info = state.storage.record_info(&bucket, &entry, timestamp).await;
            info.map(|info| (info, ().into_response()))
        } else {
            let read = state.storage.read_record(&bucket, &entry, timestamp).await;
            read.map(|(info, payload)| (info, Body::from_stream(payload).into_response()))
        };
        match fetched {
            Err(e)
                if e.kind == proto::ErrorKind::NotFound
                    && matches!(target, Target::Query(_))
                    && skipped < 64 =>
            {
                skipped += 1;
            }
            Err(e) => return Err(e.into()),
            Ok((info, mut response)) => {
                record_headers(&mut response, &info, last);
                return Ok(response);
            }
        }
    }
}

pub async fn query(
    State(state): State<AppState>,
    PathParams((bucket, entry)): PathParams<(String, String)>,
    params: Params,
) -> HttpResult<Json<Value>> {
    check_entry_name(&entry)?;
    let start = params.timestamp("start")?;
    let stop = params.timestamp("stop")?;
    let ttl = params.unsigned("ttl", "TTL")?.unwrap_or(DEFAULT_QUERY_TTL);
    if let (Some(start), Some(stop)) = (start, stop)
        && start > stop
    {
        return Err(Error::unprocessable(format!("Start {start} is after stop {stop}")).into());
    }
    let request = QueryRequest {
        bucket,
        entry,
        start,
        stop,
        ttl: Duration::from_secs(ttl),
    };
    let id = state.query.create(request).await?;
    Ok(Json(json!({ "id": id })))
}
