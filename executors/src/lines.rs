//! Output lines of commands, shared by the `process` and `docker` executors: bytes in
//! (from a pipe or from Docker's output frames, which may hold part of a line or many),
//! complete lines out to the step's [`LogSink`] as soon as they end, stdout at info and
//! stderr at warn with a `{"stream": "stdout" | "stderr"}` field, and the last
//! [`TAIL_LINES`] of each stream kept for outputs and error messages.
//!
//! A line ends at `\n` (a trailing `\r` is dropped, so CRLF output reads the same), at
//! [`MAX_LINE_BYTES`], or at the end of the stream.

use std::collections::VecDeque;
use std::io;

use morpheus_engine::{LogLevel, LogSink};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How many trailing lines of each stream are kept for the output and error messages.
pub(crate) const TAIL_LINES: usize = 20;

/// Longer lines are split: a command printing megabytes without a newline must not
/// turn into one giant log row (or unbounded memory).
pub(crate) const MAX_LINE_BYTES: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output: logged at info.
    Stdout,
    /// Standard error: logged at warn.
    Stderr,
}

impl Stream {
    fn level(self) -> LogLevel {
        match self {
            Self::Stdout => LogLevel::Info,
            Self::Stderr => LogLevel::Warn,
        }
    }

    /// `stdout` or `stderr`, as the log rows' `stream` field says.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Reassembles one stream's lines from chunks of bytes, logs each complete line, and
/// keeps the last [`TAIL_LINES`].
#[derive(Debug)]
pub(crate) struct LineSplitter {
    stream: Stream,
    partial: Vec<u8>,
    tail: VecDeque<String>,
    lines: u64,
}

impl LineSplitter {
    /// A splitter for `stream` with nothing seen yet.
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            partial: Vec::new(),
            tail: VecDeque::new(),
            lines: 0,
        }
    }

    /// Takes the next bytes of the stream, logging every line they complete.
    pub(crate) fn push(&mut self, mut bytes: &[u8], logs: &LogSink) {
        while !bytes.is_empty() {
            // Never look further than the line may grow, so a line is cut at exactly
            // MAX_LINE_BYTES whether its bytes came in one chunk or many.
            let window = &bytes[..bytes.len().min(MAX_LINE_BYTES - self.partial.len())];
            match window.iter().position(|&byte| byte == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&window[..end]);
                    bytes = &bytes[end + 1..];
                    self.emit(logs);
                }
                None => {
                    self.partial.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.partial.len() >= MAX_LINE_BYTES {
                        self.emit(logs);
                    }
                }
            }
        }
    }

    /// The stream ended: logs the unterminated last line, if any.
    pub(crate) fn finish(&mut self, logs: &LogSink) {
        if !self.partial.is_empty() {
            self.emit(logs);
        }
    }

    /// The last [`TAIL_LINES`] lines, oldest first.
    pub(crate) fn tail(&self) -> &VecDeque<String> {
        &self.tail
    }

    /// The tail, for an executor's output.
    pub(crate) fn into_tail(self) -> Vec<String> {
        self.tail.into()
    }

    /// How many lines were logged.
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    fn emit(&mut self, logs: &LogSink) {
        let text = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_owned();
        self.partial.clear();
        logs.log(
            self.stream.level(),
            text.clone(),
            Some(json!({ "stream": self.stream.name() })),
        );
        self.lines += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text);
    }
}

/// Feeds `reader` into `splitter` until EOF (or a read error, which is logged as a
/// warning), then logs the unterminated last line.
pub(crate) async fn pump(
    mut reader: impl AsyncRead + Unpin,
    splitter: &mut LineSplitter,
    logs: &LogSink,
) {
    let mut buffer = vec![0u8; 8 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => splitter.push(&buffer[..read], logs),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                logs.warn(format!(
                    "reading {} failed: {error}",
                    splitter.stream.name()
                ));
                break;
            }
        }
    }
    splitter.finish(logs);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The (level, message) pairs a sink received, in order.
    type Recorded = Arc<Mutex<Vec<(LogLevel, String)>>>;

    fn recording_sink() -> (LogSink, Recorded) {
        let lines: Recorded = Arc::default();
        let sink = {
            let lines = lines.clone();
            LogSink::new(move |level, message, _| lines.lock().unwrap().push((level, message)))
        };
        (sink, lines)
    }

    #[test]
    fn output_frames_are_reassembled_into_lines_with_a_bounded_tail() {
        let (sink, lines) = recording_sink();
        let mut splitter = LineSplitter::new(Stream::Stderr);
        splitter.push(b"first li", &sink);
        splitter.push(b"ne\r\nsecond\nthi", &sink);
        splitter.finish(&sink);
        let seen = lines.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (LogLevel::Warn, "first line".to_owned()),
                (LogLevel::Warn, "second".to_owned()),
                (LogLevel::Warn, "thi".to_owned()),
            ]
        );
        let mut many = LineSplitter::new(Stream::Stdout);
        for n in 0..50 {
            many.push(format!("{n}\n").as_bytes(), &LogSink::discard());
        }
        assert_eq!(many.tail.len(), TAIL_LINES);
        assert_eq!(many.tail.back().map(String::as_str), Some("49"));
        assert_eq!(many.lines, 50);
    }

    /// A long line is cut at the same places whether it arrives whole or byte by byte.
    #[test]
    fn long_lines_are_cut_at_max_line_bytes_however_the_bytes_arrive() {
        let text = [vec![b'x'; 40_000], b"\nend".to_vec()].concat();
        let (whole_sink, whole) = recording_sink();
        let mut splitter = LineSplitter::new(Stream::Stdout);
        splitter.push(&text, &whole_sink);
        splitter.finish(&whole_sink);
        let (bytes_sink, by_byte) = recording_sink();
        let mut splitter = LineSplitter::new(Stream::Stdout);
        for byte in &text {
            splitter.push(std::slice::from_ref(byte), &bytes_sink);
        }
        splitter.finish(&bytes_sink);
        let lengths: Vec<usize> = whole.lock().unwrap().iter().map(|(_, l)| l.len()).collect();
        assert_eq!(
            lengths,
            [
                MAX_LINE_BYTES,
                MAX_LINE_BYTES,
                40_000 - 2 * MAX_LINE_BYTES,
                3
            ]
        );
        assert_eq!(*whole.lock().unwrap(), *by_byte.lock().unwrap());
    }

    #[tokio::test]
    async fn pump_logs_every_line_of_a_reader_with_its_stream() {
        let rows: Arc<Mutex<Vec<(LogLevel, String, serde_json::Value)>>> = Arc::default();
        let sink = {
            let rows = rows.clone();
            LogSink::new(move |level, message, fields| {
                rows.lock()
                    .unwrap()
                    .push((level, message, fields.unwrap_or_default()))
            })
        };
        let mut splitter = LineSplitter::new(Stream::Stdout);
        pump(&b"hello\r\nworld"[..], &mut splitter, &sink).await;
        assert_eq!(
            *rows.lock().unwrap(),
            [
                (
                    LogLevel::Info,
                    "hello".to_owned(),
                    json!({"stream": "stdout"})
                ),
                (
                    LogLevel::Info,
                    "world".to_owned(),
                    json!({"stream": "stdout"})
                ),
            ]
        );
        assert_eq!(splitter.into_tail(), ["hello", "world"]);
    }
}
