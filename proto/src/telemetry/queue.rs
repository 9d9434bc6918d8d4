//! The queue of ended spans, and the thread that exports them in batches.
//!
//! A span is encoded as it ends, on the thread that served its request, and its bytes are
//! appended to one buffer that the export thread takes whole. The SDK's batch processor instead
//! hands each span's data to its thread through a channel: the data then crosses to the other
//! core, and is freed there, away from the allocator's cache of the thread that made it. Under
//! load that cost more time than the instructions it took, which were the same.
//!
//! Batching follows the standard `OTEL_BSP_*` variables: a batch goes when it is full or when
//! the schedule delay has passed since the last, and spans ended while the queue is full are
//! dropped (and counted in a warning), so a slow collector costs spans, never memory or time.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How spans are batched, from the standard variables.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct BatchConfig {
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits for a batch to fill.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: the most spans kept while the exporter is busy.
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: the most spans in one export.
    pub max_export_batch_size: usize,
}

impl BatchConfig {
    /// Reads the variables (defaults: 5000 ms, 2048 spans, 512 spans); errors name the variable
    /// and its value.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str, default: u64, what: &str| -> Result<u64, String> {
            match var(name).filter(|value| !value.trim().is_empty()) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0 || what == "milliseconds")
                    .ok_or_else(|| format!("{name} is '{value}', not a number of {what}")),
            }
        };
        let schedule_delay = Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000, "milliseconds")?);
        let max_queue_size = number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, "spans (1 or more)")?;
        let max_export_batch_size = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, "spans (1 or more)")?;
        if max_export_batch_size > max_queue_size {
            return Err(format!(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({max_export_batch_size}) is more than \
                 OTEL_BSP_MAX_QUEUE_SIZE ({max_queue_size})"
            ));
        }
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(Self {
            schedule_delay,
            max_queue_size: size(max_queue_size),
            max_export_batch_size: size(max_export_batch_size),
        })
    }
}

/// Spans waiting to be exported.
#[derive(Default)]
struct Pending {
    /// The encoded spans, one after the other.
    bytes: Vec<u8>,
    /// Where each span ends in `bytes`.
    ends: Vec<usize>,
    /// Spans dropped because the queue was full, since the last export.
    dropped: u64,
    /// Set when the queue stops: what is pending is exported, and nothing more is taken.
    stopping: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when a batch is full or the queue stops.
    wake: Condvar,
    config: BatchConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The lock is held only to append or swap bytes, which leaves them whole.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Spans, encoded as they end, on their way to an exporter that runs on a thread of its own.
pub(super) struct SpanQueue {
    shared: Arc<Shared>,
    /// Closed by the export thread when it has exported the last spans and ended.
    finished: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl SpanQueue {
    /// Starts the export thread, which calls `send` with the bytes of at most
    /// `max_export_batch_size` spans at a time.
    pub fn start(
        config: BatchConfig,
        send: impl FnMut(&[u8]) -> Result<(), String> + Send + 'static,
    ) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            config,
        });
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let exporting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("otlp-spans".into())
            .spawn(move || {
                export_until_stopped(&exporting, send);
                drop(finish);
            })
            .map_err(|e| format!("Cannot start the span export: {e}"))?;
        Ok(Self {
            shared,
            finished: Mutex::new(finished),
        })
    }

    /// Queues a span that `encode` appends to a buffer, or drops it when the queue is full.
    pub fn push(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let config = &self.shared.config;
        let mut pending = self.shared.lock();
        if pending.stopping || pending.ends.len() >= config.max_queue_size {
            pending.dropped += 1;
            return;
        }
        encode(&mut pending.bytes);
        let end = pending.bytes.len();
        pending.ends.push(end);
        let full = pending.ends.len() == config.max_export_batch_size;
        drop(pending);
        if full {
            self.shared.wake.notify_one();
        }
    }

    /// Exports what is pending and stops the export thread, waiting for it at most `wait`.
    /// Spans ended later are dropped.
    pub fn stop(&self, wait: Duration) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        let finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        // Closed (or already closed by an earlier stop) when the thread is done.
        let _ = finished.recv_timeout(wait);
    }
}

/// The export thread: takes the pending spans when a batch is full, the delay has passed or the
/// queue stops, and sends them in batches; until the queue stops.
fn export_until_stopped(shared: &Shared, mut send: impl FnMut(&[u8]) -> Result<(), String>) {
    let config = &shared.config;
    // The buffers the spans were taken in, emptied and handed back at the next take, so that
    // neither side allocates once they have grown.
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    let mut last_error: Option<(String, Instant)> = None;
    // A delay of zero would have the thread spin, and one of ages overflow the clock; a span
    // waits a day at most.
    let delay = config
        .schedule_delay
        .clamp(Duration::from_millis(1), Duration::from_secs(24 * 3600));
    let mut deadline = Instant::now() + delay;
    loop {
        let (dropped, stopping) = {
            let mut pending = shared.lock();
            loop {
                let now = Instant::now();
                if pending.stopping || pending.ends.len() >= config.max_export_batch_size {
                    break;
                }
                if now >= deadline {
                    if !pending.ends.is_empty() {
                        break;
                    }
                    // Nothing to send: the delay starts again.
                    deadline = now + delay;
                }
                pending = shared
                    .wake
                    .wait_timeout(pending, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut bytes);
            std::mem::swap(&mut pending.ends, &mut ends);
            (std::mem::take(&mut pending.dropped), pending.stopping)
        };
        deadline = Instant::now() + delay;
        if dropped > 0 {
            tracing::warn!(
                "{dropped} spans were dropped: {} were already waiting for the OTLP collector \
                 (OTEL_BSP_MAX_QUEUE_SIZE)",
                config.max_queue_size
            );
        }
        let mut start = 0;
        for batch in ends.chunks(config.max_export_batch_size) {
            let end = batch[batch.len() - 1];
            match send(&bytes[start..end]) {
                Ok(()) => last_error = None,
                Err(e) => {
                    // Said once, and again only when it changes or a minute later, so that a
                    // collector that is down does not flood the log.
                    let repeated = last_error
                        .as_ref()
                        .is_some_and(|(last, at)| *last == e && at.elapsed() < Duration::from_secs(60));
                    if !repeated {
                        tracing::warn!("{} spans were not exported: {e}", batch.len());
                        last_error = Some((e, Instant::now()));
                    }
                }
            }
            start = end;
        }
        bytes.clear();
        ends.clear();
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// Long enough for a busy machine; the tests wait for events, never for this long.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn config(delay_ms: u64, queue: usize, batch: usize) -> BatchConfig {
        BatchConfig {
            schedule_delay: Duration::from_millis(delay_ms),
            max_queue_size: queue,
            max_export_batch_size: batch,
        }
    }

    /// A queue whose sends arrive, as the list of their span bytes, on the returned channel.
    fn queue(config: BatchConfig) -> (SpanQueue, mpsc::Receiver<Vec<u8>>) {
        let (sent, batches) = mpsc::channel();
        let queue = SpanQueue::start(config, move |spans: &[u8]| {
            sent.send(spans.to_vec()).unwrap();
            Ok(())
        })
        .unwrap();
        (queue, batches)
    }

    /// Queues the spans `[n]` (one byte each) for `n` in `numbers`.
    fn push(queue: &SpanQueue, numbers: std::ops::Range<u8>) {
        for n in numbers {
            queue.push(|buf| buf.push(n));
        }
    }

    #[test]
    fn a_full_batch_goes_at_once_without_waiting_for_the_delay() {
        let (queue, batches) = queue(config(3_600_000, 10, 3));
        push(&queue, 0..3);
        assert_eq!(batches.recv_timeout(PATIENCE).unwrap(), vec![0, 1, 2]);
        push(&queue, 3..6);
        assert_eq!(batches.recv_timeout(PATIENCE).unwrap(), vec![3, 4, 5]);
        queue.stop(PATIENCE);
        assert!(batches.try_recv().is_err(), "nothing more was sent");
    }

    #[test]
    fn spans_that_do_not_fill_a_batch_go_after_the_delay() {
        for delay_ms in [0, 1] {
            let (queue, batches) = queue(config(delay_ms, 10, 5));
            push(&queue, 0..2);
            assert_eq!(batches.recv_timeout(PATIENCE).unwrap(), vec![0, 1]);
            push(&queue, 2..3);
            assert_eq!(batches.recv_timeout(PATIENCE).unwrap(), vec![2]);
            queue.stop(PATIENCE);
            assert!(batches.try_recv().is_err(), "no empty batch was sent");
        }
    }

    #[test]
    fn stopping_exports_what_is_pending_in_batches_and_takes_no_more() {
        let (queue, batches) = queue(config(3_600_000, 10, 2));
        push(&queue, 0..5);
        queue.stop(PATIENCE);
        let sent: Vec<Vec<u8>> = batches.try_iter().collect();
        assert!(sent.iter().all(|batch| batch.len() <= 2), "{sent:?}");
        assert_eq!(sent.concat(), vec![0, 1, 2, 3, 4]);
        push(&queue, 5..6);
        queue.stop(PATIENCE);
        assert!(batches.try_recv().is_err());
    }

    #[test]
    fn spans_ended_while_the_queue_is_full_are_dropped_and_the_rest_kept() {
        let (started, starts) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let (sent, batches) = mpsc::channel();
        let queue = SpanQueue::start(config(3_600_000, 4, 2), move |spans: &[u8]| {
            started.send(()).unwrap();
            released.recv().unwrap();
            sent.send(spans.to_vec()).unwrap();
            Ok(())
        })
        .unwrap();
        push(&queue, 0..2);
        // The first batch is being sent and the collector does not answer: four more fit.
        starts.recv_timeout(PATIENCE).unwrap();
        push(&queue, 2..9);
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        queue.stop(PATIENCE);
        let all: Vec<Vec<u8>> = batches.try_iter().collect();
        assert_eq!(all, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    }

    #[test]
    fn failed_sends_do_not_stop_the_export() {
        let (sent, batches) = mpsc::channel();
        let queue = SpanQueue::start(config(3_600_000, 10, 1), move |spans: &[u8]| {
            sent.send(spans.to_vec()).unwrap();
            Err("the collector is down".to_string())
        })
        .unwrap();
        push(&queue, 0..3);
        queue.stop(PATIENCE);
        assert_eq!(batches.try_iter().count(), 3);
    }

    fn from(vars: &[(&str, &str)]) -> Result<BatchConfig, String> {
        BatchConfig::from_env(|name| {
            vars.iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| value.to_string())
        })
    }

    #[test]
    fn batching_follows_the_standard_variables() {
        assert_eq!(from(&[]).unwrap(), config(5000, 2048, 512));
        assert_eq!(
            from(&[
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", " 100 "),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
            ])
            .unwrap(),
            config(250, 100, 100)
        );
        // Any delay is taken, without the export thread failing.
        let (queue, batches) = queue(from(&[("OTEL_BSP_SCHEDULE_DELAY", &u64::MAX.to_string())]).unwrap());
        push(&queue, 0..1);
        queue.stop(PATIENCE);
        assert_eq!(batches.try_recv().unwrap(), vec![0]);
        let error = from(&[("OTEL_BSP_SCHEDULE_DELAY", "5s")]).unwrap_err();
        assert!(error.contains("OTEL_BSP_SCHEDULE_DELAY is '5s'"), "{error}");
        let error = from(&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]).unwrap_err();
        assert!(error.contains("OTEL_BSP_MAX_QUEUE_SIZE is '0'"), "{error}");
        let error = from(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")]).unwrap_err();
        assert!(error.contains("(4096)") && error.contains("(2048)"), "{error}");
    }
}
