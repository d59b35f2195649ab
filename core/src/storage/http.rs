//! What the HTTP object-store backends share: the retry policy and error descriptions.

use std::io::{self, Read};
use std::time::Duration;

use rand::Rng;

use super::RemoteCause;

/// Why one attempt at a request failed.
pub(crate) enum Attempt<T> {
    /// Worth another attempt: connection trouble, timeouts, 5xx, throttling.
    Transient(RemoteCause),
    /// Final: success, or an answer that retrying cannot change.
    Done(T),
}

/// Runs `attempt` up to `max_attempts` times with exponential backoff and jitter between
/// transient failures; `Err` carries the last reason and the attempt count.
pub(crate) fn with_retries<T>(
    max_attempts: u32,
    attempt: impl FnMut() -> Attempt<T>,
) -> Result<T, RemoteCause> {
    with_retries_noting(max_attempts, attempt).0
}

/// [`with_retries`], also telling whether an attempt failed transiently before the outcome: a
/// write whose answer never came (a timeout, a cut connection, a 5xx) may still have been
/// carried out, so a conditional write retried after one can meet its own object.
pub(crate) fn with_retries_noting<T>(
    max_attempts: u32,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> (Result<T, RemoteCause>, bool) {
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt() {
            Attempt::Done(value) => return (Ok(value), tries > 1),
            Attempt::Transient(last) if tries >= max_attempts => {
                return (
                    Err(RemoteCause::GaveUp {
                        last: Box::new(last),
                        attempts: tries,
                    }),
                    true,
                )
            }
            Attempt::Transient(_) => std::thread::sleep(backoff(tries)),
        }
    }
}

/// 400 ms, 800 ms, 1.6 s ... up to 10 s, each scaled by a random factor in [0.5, 1).
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(6)).min(10_000);
    let jitter = rand::thread_rng().gen_range(0.5..1.0);
    Duration::from_millis((base as f64 * jitter) as u64)
}

/// Whether an HTTP status is worth retrying.
pub(crate) fn is_transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// A reqwest error with its chain of causes ("connection refused" is in a source).
pub(crate) fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

pub(crate) fn client(timeout: Duration) -> Result<reqwest::blocking::Client, reqwest::Error> {
    reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
}

/// A response body that reports a short read (a connection cut mid-body) as an error, never
/// as the end of the object.
pub(crate) struct LengthCheckedBody {
    response: reqwest::blocking::Response,
    expected: Option<u64>,
    read: u64,
}

impl LengthCheckedBody {
    pub(crate) fn new(response: reqwest::blocking::Response) -> Self {
        let expected = response.content_length();
        LengthCheckedBody {
            response,
            expected,
            read: 0,
        }
    }
}

impl Read for LengthCheckedBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.response.read(buf)?;
        self.read += n as u64;
        if n == 0 && !buf.is_empty() {
            if let Some(expected) = self.expected.filter(|expected| *expected != self.read) {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the response ended after {} of {expected} bytes", self.read),
                ));
            }
        }
        Ok(n)
    }
}

/// The `Range` header's value for `length` (> 0) bytes from `offset`.
pub(crate) fn byte_range(offset: u64, length: u64) -> String {
    format!("bytes={offset}-{}", offset.saturating_add(length - 1))
}

/// A ranged GET's response, which must be the range (206): a store that ignored the header
/// answers 200 with the whole object, which must not be read as the range.
pub(crate) fn require_partial_content(
    response: reqwest::blocking::Response,
    store: &str,
    key: &str,
) -> Result<reqwest::blocking::Response, super::StorageError> {
    if response.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        return Ok(response);
    }
    Err(super::StorageError::Remote {
        store: store.to_string(),
        operation: "read a range of".into(),
        key: key.to_string(),
        reason: RemoteCause::Answer(format!(
            "HTTP {} instead of 206 Partial Content: the store ignored the byte range",
            response.status()
        )),
    })
}
