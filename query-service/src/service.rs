//! Cursors over the records of an entry. A cursor holds one page of record metadata at a time and
//! asks the storage for the next page (timestamps after the last one seen) when it runs out, so a
//! query over millions of records costs the same memory as one over ten.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use proto::api::{QueryApi, StorageApi};
use proto::types::{NextRecord, QueryRequest, RecordInfo};
use proto::{Error, ErrorKind, Result};

use crate::config::QueryConfig;
use crate::ids::IdAllocator;

pub struct QueryService {
    /// Queries removed because their TTL passed (no-op until telemetry is set up).
    expired: opentelemetry::metrics::Counter<u64>,
    /// Keeps the live-queries callback registered.
    _live: opentelemetry::metrics::ObservableGauge<u64>,
    storage: Arc<dyn StorageApi>,
    config: QueryConfig,
    ids: Mutex<IdAllocator>,
    queries: Mutex<HashMap<u64, Arc<Query>>>,
}

struct Query {
    bucket: String,
    entry: String,
    ttl: Duration,
    last_access: Mutex<Instant>,
    cursor: tokio::sync::Mutex<Cursor>,
}

struct Cursor {
    /// Records fetched from the storage and not yet handed out.
    page: VecDeque<RecordInfo>,
    /// Where the next page starts.
    next_start: u64,
    stop: u64,
    /// The storage has no records left in the interval beyond `page`.
    drained: bool,
    /// The last record was handed out.
    finished: bool,
}

impl Query {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(*self.last_access.lock().unwrap_or_else(|p| p.into_inner())) > self.ttl
    }

    fn touch(&self) {
        *self.last_access.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
}

impl QueryService {
    /// Starts the service and its background task that frees expired queries; the task ends
    /// when the service is dropped.
    pub fn start(storage: Arc<dyn StorageApi>, config: QueryConfig) -> Result<Arc<Self>> {
        let ids = IdAllocator::open(&config.data_path)?;
        let meter = opentelemetry::global::meter("query-service");
        let expired = meter
            .u64_counter("reduct_queries_expired")
            .with_description("Queries removed after their TTL")
            .build();
        let service = Arc::new_cyclic(|weak: &Weak<Self>| {
            let weak = weak.clone();
            let live = meter
                .u64_observable_gauge("reduct_queries_live")
                .with_description("Queries open now")
                .with_callback(move |observer| {
                    if let Some(service) = weak.upgrade() {
                        observer.observe(service.live_queries() as u64, &[]);
                    }
                })
                .build();
            Self {
                expired,
                _live: live,
                storage,
                config,
                ids: Mutex::new(ids),
                queries: Mutex::new(HashMap::new()),
            }
        });
        let weak: Weak<Self> = Arc::downgrade(&service);
        let period = service.config.expiry_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                let Some(service) = weak.upgrade() else { break };
                service.remove_expired();
            }
        });
        Ok(service)
    }

    /// The number of live queries.
    pub fn live_queries(&self) -> usize {
        self.queries().len()
    }

    fn queries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Query>>> {
        self.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frees the queries whose TTL has passed; returns how many.
    pub fn remove_expired(&self) -> usize {
        let now = Instant::now();
        let mut queries = self.queries();
        let before = queries.len();
        queries.retain(|_, query| !query.expired(now));
        let removed = before - queries.len();
        self.expired.add(removed as u64, &[]);
        removed
    }

    async fn fill(&self, query: &Query, cursor: &mut Cursor) -> Result<()> {
        if !cursor.page.is_empty() || cursor.drained {
            return Ok(());
        }
        let limit = self.config.page_size;
        let page = self
            .storage
            .list_records(&query.bucket, &query.entry, cursor.next_start, cursor.stop, limit)
            .await?;
        cursor.drained = page.len() < limit as usize;
        if let Some(last) = page.last() {
            cursor.next_start = last.timestamp.saturating_add(1);
            if last.timestamp == u64::MAX {
                cursor.drained = true;
            }
        }
        cursor.page.extend(page);
        Ok(())
    }
}

#[async_trait]
impl QueryApi for QueryService {
    async fn create(&self, request: QueryRequest) -> Result<u64> {
        let entry = self.storage.get_entry(&request.bucket, &request.entry).await?;
        let start = request.start.unwrap_or(0);
        // Without a stop the query ends after the latest record; a start past it is an empty
        // interval, which still gives an id.
        let stop = match request.stop {
            Some(stop) if start > stop => {
                return Err(Error::unprocessable(format!(
                    "Start {start} is after stop {stop}"
                )));
            }
            Some(stop) => stop,
            None => entry.latest_record.saturating_add(1).max(start),
        };
        if self.live_queries() >= self.config.max_queries {
            self.remove_expired();
        }
        let mut queries = self.queries();
        if queries.len() >= self.config.max_queries {
            return Err(Error::new(
                ErrorKind::TooManyRequests,
                format!("Too many open queries: the limit is {}", self.config.max_queries),
            ));
        }
        let id = self.ids.lock().unwrap_or_else(|p| p.into_inner()).next_id()?;
        let query = Query {
            bucket: request.bucket,
            entry: request.entry,
            ttl: request.ttl,
            last_access: Mutex::new(Instant::now()),
            cursor: tokio::sync::Mutex::new(Cursor {
                page: VecDeque::new(),
                next_start: start,
                stop,
                drained: start == stop,
                finished: false,
            }),
        };
        queries.insert(id, Arc::new(query));
        Ok(id)
    }

    async fn next(&self, id: u64, bucket: &str, entry: &str) -> Result<Option<NextRecord>> {
        let query = self.queries().get(&id).cloned();
        let query = match query {
            Some(query)
                if !query.expired(Instant::now()) && query.bucket == bucket && query.entry == entry =>
            {
                query
            }
            Some(query) if query.expired(Instant::now()) => {
                if self.queries().remove(&id).is_some() {
                    self.expired.add(1, &[]);
                }
                return Err(Error::query_not_found(id));
            }
            _ => return Err(Error::query_not_found(id)),
        };
        query.touch();
        let mut cursor = query.cursor.lock().await;
        // Another reader took the last record while this one waited for the cursor.
        if cursor.finished {
            return Err(Error::query_not_found(id));
        }
        self.fill(&query, &mut cursor).await?;
        let Some(record) = cursor.page.pop_front() else {
            return Ok(None);
        };
        self.fill(&query, &mut cursor).await?;
        let last = cursor.page.is_empty() && cursor.drained;
        if last {
            cursor.finished = true;
            self.queries().remove(&id);
        }
        query.touch();
        Ok(Some(NextRecord {
            timestamp: record.timestamp,
            last,
        }))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::StreamExt;
    use proto::types::{BucketSettingsPatch, WriteRecord};
    use storage_node::{Storage, StorageConfig};

    use super::*;

    async fn service_with_records(
        dir: &std::path::Path,
        stamps: &[u64],
        mut config: QueryConfig,
    ) -> Arc<QueryService> {
        let storage = Storage::open(&StorageConfig::new(dir.join("storage"))).unwrap();
        storage
            .create_bucket("b", BucketSettingsPatch::default())
            .await
            .unwrap();
        for &ts in stamps {
            let record = WriteRecord {
                bucket: "b".into(),
                entry: "e".into(),
                timestamp: ts,
                content_length: 1,
                content_type: String::new(),
            };
            let body = futures::stream::once(async { Ok(Bytes::from_static(b"x")) }).boxed();
            storage.write_record(record, body).await.unwrap();
        }
        config.data_path = dir.join("query");
        QueryService::start(storage, config).unwrap()
    }

    fn request(start: Option<u64>, stop: Option<u64>, ttl: Duration) -> QueryRequest {
        QueryRequest {
            bucket: "b".into(),
            entry: "e".into(),
            start,
            stop,
            ttl,
        }
    }

    #[tokio::test]
    async fn pages_end_exactly_on_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = QueryConfig::new(dir.path());
        config.page_size = 2;
        let service = service_with_records(dir.path(), &[1, 2, 3, 4, 5, 6], config).await;
        for (stop, expected) in [
            (Some(5), vec![1, 2, 3, 4]),
            (None, vec![1, 2, 3, 4, 5, 6]),
            (Some(6), vec![1, 2, 3, 4, 5]),
        ] {
            let id = service
                .create(request(None, stop, Duration::from_secs(60)))
                .await
                .unwrap();
            let mut seen = Vec::new();
            while let Some(next) = service.next(id, "b", "e").await.unwrap() {
                seen.push(next.timestamp);
                assert_eq!(
                    next.last,
                    seen.len() == expected.len(),
                    "stop {stop:?} at {seen:?}"
                );
                if next.last {
                    break;
                }
            }
            assert_eq!(seen, expected);
            assert_eq!(
                service.next(id, "b", "e").await.unwrap_err().kind,
                ErrorKind::NotFound
            );
        }
    }

    #[tokio::test]
    async fn the_background_task_frees_expired_queries() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = QueryConfig::new(dir.path());
        config.expiry_interval = Duration::from_millis(10);
        let service = service_with_records(dir.path(), &[1, 2], config).await;
        let id = service
            .create(request(None, None, Duration::from_millis(20)))
            .await
            .unwrap();
        service
            .create(request(None, None, Duration::from_secs(3600)))
            .await
            .unwrap();
        assert_eq!(service.live_queries(), 2);
        // Polls, with a generous bound, for the task to have run after the TTL passed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while service.live_queries() > 1 {
            assert!(Instant::now() < deadline, "the expired query was never freed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            service.next(id, "b", "e").await.unwrap_err(),
            Error::query_not_found(id)
        );
    }

    #[tokio::test]
    async fn the_cap_on_live_queries_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = QueryConfig::new(dir.path());
        config.max_queries = 1;
        let service = service_with_records(dir.path(), &[1], config).await;
        service
            .create(request(None, None, Duration::from_secs(60)))
            .await
            .unwrap();
        let error = service
            .create(request(None, None, Duration::from_secs(60)))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::TooManyRequests);
        assert!(error.message.contains("limit is 1"), "{error}");
    }
}
