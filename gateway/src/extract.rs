//! Extractors whose failures answer in the API's error format, and parsers of query parameters.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{Error, HttpError};

/// Path parameters; a path that cannot be decoded is a 422.
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParams(value))
            .map_err(|e| Error::unprocessable(format!("Bad path: {e}")).into())
    }
}

/// Query parameters by name.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(map)| Params(map))
            .map_err(|e| Error::unprocessable(format!("Bad query string: {e}")).into())
    }
}

impl Params {
    /// A timestamp parameter. Old clients send decimals such as `1796314318451404.8`: the
    /// fraction is dropped.
    pub fn timestamp(&self, name: &str) -> Result<Option<u64>, Error> {
        self.0
            .get(name)
            .map(|value| parse_timestamp(name, value))
            .transpose()
    }

    pub fn unsigned(&self, name: &str, what: &str) -> Result<Option<u64>, Error> {
        self.0
            .get(name)
            .map(|value| {
                value
                    .parse::<u64>()
                    .map_err(|_| Error::unprocessable(format!("Bad {what} '{value}'")))
            })
            .transpose()
    }
}

fn parse_timestamp(name: &str, value: &str) -> Result<u64, Error> {
    let bad = || {
        Error::unprocessable(format!(
            "Bad timestamp '{value}' in '{name}': it must be a UNIX time in microseconds"
        ))
    };
    let integer = match value.split_once('.') {
        Some((integer, fraction)) if fraction.bytes().all(|b| b.is_ascii_digit()) => integer,
        Some(_) => return Err(bad()),
        None => value,
    };
    if integer.is_empty() || !integer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    integer.parse::<u64>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_like_old_clients_send_them() {
        assert_eq!(
            parse_timestamp("ts", "1796314318451404").unwrap(),
            1796314318451404
        );
        assert_eq!(
            parse_timestamp("ts", "1796314318451404.8").unwrap(),
            1796314318451404
        );
        assert_eq!(parse_timestamp("ts", "0").unwrap(), 0);
        for bad in [
            "",
            "-1",
            "abc",
            "1.2.3",
            "1e6",
            "+5",
            "18446744073709551616",
            ".5",
            "1.x",
        ] {
            let error = parse_timestamp("ts", bad).unwrap_err();
            assert!(error.message.contains(&format!("'{bad}'")), "{error}");
        }
    }
}
