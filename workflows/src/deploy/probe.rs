//! The readiness probe: the start command is ready when `GET /` answers with a status
//! below 500 (a 404 is a live server with nothing at `/`; a 3xx is not followed).

use std::time::{Duration, Instant};

use morpheus_engine::{LogSink, StepError};
use serde::{Deserialize, Serialize};

/// Time allowed for one probe request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between probes.
const INTERVAL: Duration = Duration::from_millis(200);

/// What the successful probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// The HTTP status of the answer.
    pub status: u16,
    /// Probes made.
    pub attempts: u32,
    /// Time from the first probe to the answer.
    pub waited_ms: u64,
}

/// Probes `url` until it answers below 500, or fails (permanently) after `within`,
/// naming the last problem seen.
pub async fn wait_until_ready(
    url: &str,
    within: Duration,
    logs: &LogSink,
) -> Result<Readiness, StepError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| StepError::permanent(format!("cannot build the HTTP client: {error}")))?;
    let started = Instant::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last_problem = match client.get(url).send().await {
            Ok(response) if response.status().as_u16() < 500 => {
                let status = response.status().as_u16();
                let waited_ms = started.elapsed().as_millis() as u64;
                logs.info(format!(
                    "ready: GET {url} answered {status} after {waited_ms} ms ({attempts} probes)"
                ));
                return Ok(Readiness {
                    status,
                    attempts,
                    waited_ms,
                });
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => describe(&error),
        };
        if attempts == 1 {
            logs.info(format!("waiting for {url} to answer ({last_problem})"));
        }
        if started.elapsed() + INTERVAL >= within {
            return Err(StepError::permanent(format!(
                "not ready: GET {url} gave no answer below 500 within {}s (last: {last_problem})",
                within.as_secs_f64()
            )));
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    // The root cause ("Connection refused") says more than reqwest's wrapper.
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve_once(status_line: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let reply = format!(
                    "HTTP/1.1 {status_line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_live_server_is_ready_even_with_a_404() {
        let (url, server) = serve_once("404 Not Found").await;
        let ready = wait_until_ready(&url, Duration::from_secs(5), &LogSink::discard())
            .await
            .unwrap();
        assert_eq!(ready.status, 404);
        assert_eq!(ready.attempts, 1);
        server.abort();
    }

    #[tokio::test]
    async fn server_errors_and_silence_fail_permanently_at_the_deadline() {
        let (url, server) = serve_once("503 Service Unavailable").await;
        let error = wait_until_ready(&url, Duration::from_millis(700), &LogSink::discard())
            .await
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.message().contains("HTTP 503"), "{}", error.message());
        server.abort();

        // Nothing listens on a port we bound and released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = wait_until_ready(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_millis(500),
            &LogSink::discard(),
        )
        .await
        .unwrap_err();
        assert!(error.message().contains("not ready"), "{}", error.message());
    }
}
