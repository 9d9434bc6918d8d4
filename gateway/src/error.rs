//! How errors look on the wire: status from the shared table, `{"detail": ...}` body, and the same
//! message in `x-reduct-error`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

pub use proto::Error;

/// A [`proto::Error`] as an HTTP response.
#[derive(Debug)]
pub struct HttpError(pub Error);

pub type HttpResult<T> = Result<T, HttpError>;

impl From<Error> for HttpError {
    fn from(error: Error) -> Self {
        HttpError(error)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let message = self.0.message;
        let body = serde_json::json!({ "detail": message }).to_string();
        let mut response = (self.0.kind.http_status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-reduct-error", header_value(&message));
        response
    }
}

/// The message as a header value: characters a header cannot carry (non-ASCII, control) are
/// written as Rust-style escapes, so the header stays readable by every client.
fn header_value(message: &str) -> HeaderValue {
    let printable: String = message
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c.to_string()
            } else {
                c.escape_default().to_string()
            }
        })
        .collect();
    HeaderValue::from_str(&printable).unwrap_or(HeaderValue::from_static("error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_ascii_headers() {
        assert_eq!(header_value("Bucket 'a' is not found"), "Bucket 'a' is not found");
        assert_eq!(header_value("name '\u{e9}'\n"), r"name '\u{e9}'\n");
    }
}
