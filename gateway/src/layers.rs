//! What wraps every route: the fallbacks, the API's response headers, authentication and CORS.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::config::Config;
use crate::error::{Error, HttpError};

/// The API level this server implements.
const API_VERSION: &str = "1.0";

struct Auth {
    token: Option<String>,
    alive_path: String,
}

pub fn apply(app: Router, config: &Config, api_path: String) -> Router {
    let auth = Arc::new(Auth {
        token: config.token().map(str::to_string),
        alive_path: format!("{api_path}/alive"),
    });
    app.fallback(not_found)
        // A method the path does not have is, for the API, a path that does not exist.
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(auth, authenticate))
        .layer(middleware::from_fn(close_after_unread_body))
        .layer(middleware::map_response(api_headers))
        .layer(cors(&config.cors_allow_origin))
}

async fn not_found() -> HttpError {
    Error::not_found("Not found").into()
}

async fn api_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-reduct-api", HeaderValue::from_static(API_VERSION));
    headers.insert(
        header::SERVER,
        HeaderValue::from_static(concat!("reductstore-rs ", env!("CARGO_PKG_VERSION"))),
    );
    response
}

/// An error answered before the request's body was read leaves the rest of that body on the
/// connection, so the server closes it after the answer: the client is told, so that it does not
/// send its next request on a connection that is going away.
async fn close_after_unread_body(request: Request, next: Next) -> Response {
    let http1 = request.version() <= http::Version::HTTP_11;
    let has_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0")
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let mut response = next.run(request).await;
    if http1 && has_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn authenticate(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let Some(token) = &auth.token else {
        return next.run(request).await;
    };
    let is_alive =
        request.uri().path() == auth.alive_path && matches!(*request.method(), Method::GET | Method::HEAD);
    if is_alive {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        None => HttpError(Error::new(
            proto::ErrorKind::Unauthorized,
            "No bearer token in request header",
        ))
        .into_response(),
        Some(given) if bool::from(given.trim().as_bytes().ct_eq(token.as_bytes())) => next.run(request).await,
        Some(_) => HttpError(Error::new(proto::ErrorKind::Unauthorized, "Invalid token")).into_response(),
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow_any = origins.iter().any(|origin| origin.trim() == "*");
    let allow_origin = if allow_any {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim()).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers(Any)
}
