//! Envoy's output: its log lines forwarded to tracing at their own level,
//! its access-log lines passed through as they are, and the latest error
//! lines kept for the crash report.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{debug, error, info, warn};

/// Envoy's latest error lines, for the crash report.
pub(super) type LastErrors = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

pub(super) fn remember_error(last: &LastErrors, line: String) {
    let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
    l.push(line);
    let n = l.len();
    if n > 3 {
        l.drain(..n - 3);
    }
}

/// Follows Envoy's log file (`--log-path`), forwarding each line like the
/// piped output; `from_end` skips what an adopted Envoy wrote before.
pub(super) async fn tail_log(path: PathBuf, from_end: bool, last_errors: LastErrors) {
    use tokio::io::AsyncSeekExt;
    let mut file = loop {
        match tokio::fs::File::open(&path).await {
            Ok(f) => break f,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    if from_end {
        let _ = file.seek(std::io::SeekFrom::End(0)).await;
    }
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line).await {
            // At the end, possibly mid-line: wait for the rest.
            Ok(_) if !line.ends_with('\n') => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) => {
                let l = line.trim_end();
                if forward_log_line(l) {
                    remember_error(&last_errors, l.to_string());
                }
                line.clear();
            }
            Err(_) => {
                line.clear();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One line of Envoy's log, split into its parts. Envoy's default format is
/// `[time][thread][level][logger] [file:line] message`.
#[derive(Debug, PartialEq, Eq)]
struct EnvoyLine<'a> {
    level: &'a str,
    logger: &'a str,
    source: &'a str,
    message: &'a str,
}

fn parse_envoy_line(line: &str) -> Option<EnvoyLine<'_>> {
    let mut rest = line;
    let mut fields = [""; 4];
    for f in &mut fields {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        *f = &inner[..end];
        rest = &inner[end + 1..];
    }
    let inner = rest.strip_prefix(" [")?;
    let end = inner.find(']')?;
    let source = &inner[..end];
    let message = inner[end + 1..]
        .strip_prefix(' ')
        .unwrap_or(&inner[end + 1..]);
    Some(EnvoyLine {
        level: fields[2],
        logger: fields[3],
        source,
        message,
    })
}

/// Envoy's access-log lines (JSON objects, one per request or connection;
/// its own log lines start with `[`).
pub(super) fn is_access_log_line(line: &str) -> bool {
    line.starts_with('{')
}

/// Access-log lines on their way to our standard error, as they are: one
/// write per batch the pipe delivered, instead of a formatted tracing event
/// and a write per request (at 20,000 requests/s that relay cost ~6 % of a
/// core, and it competed with translation). They are written only while
/// the `envoy` target logs at info.
#[derive(Default)]
pub(super) struct AccessLines {
    buf: Vec<u8>,
}

impl AccessLines {
    /// Above this, a batch goes out without waiting for the pipe to drain.
    const MAX: usize = 256 * 1024;

    pub(super) fn push(&mut self, line: &str) {
        self.buf.extend_from_slice(line.as_bytes());
        self.buf.push(b'\n');
    }

    pub(super) fn full(&self) -> bool {
        self.buf.len() >= Self::MAX
    }

    /// The batch, emptied.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub(super) fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let batch = self.take();
        if tracing::enabled!(target: "envoy", tracing::Level::INFO) {
            use std::io::Write;
            let _ = std::io::stderr().lock().write_all(&batch);
        }
    }
}

/// Forwards one Envoy log line to tracing (target "envoy") at its own level.
/// The indented extension inventory Envoy prints at start goes to debug.
/// Returns whether the line was an error (kept for the crash report).
pub(super) fn forward_log_line(line: &str) -> bool {
    let Some(l) = parse_envoy_line(line) else {
        info!(target: "envoy", "{line}");
        return false;
    };
    let inventory = l.logger == "main" && l.message.starts_with("  ");
    match l.level {
        "critical" | "error" => {
            error!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message)
        }
        "warning" => warn!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message),
        "info" if !inventory => {
            info!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message)
        }
        _ => debug!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message),
    }
    matches!(l.level, "critical" | "error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_lines_are_batched_as_they_are() {
        assert!(is_access_log_line(r#"{"response_code":200}"#));
        assert!(!is_access_log_line(
            "[2026-11-30 06:37:25.863][12071][warning][main] [source/server/server.cc:1059] x"
        ));
        let mut a = AccessLines::default();
        a.push(r#"{"a":1}"#);
        a.push(r#"{"b":"é \" x"}"#);
        assert!(!a.full());
        assert_eq!(
            a.take(),
            b"{\"a\":1}\n{\"b\":\"\xc3\xa9 \\\" x\"}\n".to_vec()
        );
        assert!(a.take().is_empty());
        let line = "x".repeat(1024);
        for _ in 0..256 {
            a.push(&line);
        }
        assert!(a.full());
    }

    #[test]
    fn parses_envoy_log_lines() {
        let l = parse_envoy_line(
            "[2026-11-23 08:46:48.431][16518][info][upstream] [source/common/listener_manager/lds_api.cc:110] lds: add/update listener 'x'",
        )
        .unwrap();
        assert_eq!(
            l,
            EnvoyLine {
                level: "info",
                logger: "upstream",
                source: "source/common/listener_manager/lds_api.cc:110",
                message: "lds: add/update listener 'x'",
            }
        );
        assert_eq!(parse_envoy_line("not an envoy line"), None);
        assert_eq!(parse_envoy_line("[a][b][c]"), None);
    }
}
