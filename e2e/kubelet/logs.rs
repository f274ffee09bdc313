//! Container logs, kept and read like a real kubelet's.
//!
//! Each container's stdout and stderr go through pipes to the kubelet, which
//! writes every line to `<pod dir>/logs/<container>/<restartCount>.log` in
//! the CRI log format real runtimes use:
//!
//! ```text
//! 2026-11-29T18:40:07.123456789Z stdout F Echoing back request made to /x to client (10.244.0.1:4242)
//! ```
//!
//! (`F` a full line, `P` a part of one longer than [`MAX_LINE`]). The
//! kubelet's `/containerLogs` endpoint reads them back with the options the
//! API server passes on from `kubectl logs` / the pods/log subresource:
//! sinceTime, sinceSeconds, timestamps, tailLines, limitBytes, follow,
//! previous and stream.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Child;
use tracing::warn;

/// Longest line kept whole; longer output is split into `P` records
/// (containerd's limit is 16 KiB too).
pub const MAX_LINE: usize = 16 * 1024;

/// What the log server needs from the kubelet.
#[derive(Default)]
pub struct LogState {
    /// "namespace/name" → the Pod's directory (its newest incarnation).
    dirs: Mutex<HashMap<String, PathBuf>>,
    /// Log files a running container still writes (follow ends when its
    /// file leaves this set).
    open: Mutex<HashSet<PathBuf>>,
}

impl LogState {
    pub fn register_pod(&self, key: &str, dir: &Path) {
        self.dirs
            .lock()
            .unwrap()
            .insert(key.to_string(), dir.to_path_buf());
    }

    pub fn pod_dir(&self, key: &str) -> Option<PathBuf> {
        self.dirs.lock().unwrap().get(key).cloned()
    }

    pub fn is_open(&self, file: &Path) -> bool {
        self.open.lock().unwrap().contains(file)
    }
}

/// The log file of one run of a container.
pub fn log_file(pod_dir: &Path, container: &str, restart: i32) -> PathBuf {
    pod_dir
        .join("logs")
        .join(container)
        .join(format!("{}.log", restart.max(0)))
}

/// A container's log files, oldest run first.
pub fn log_files(pod_dir: &Path, container: &str) -> Vec<PathBuf> {
    let dir = pod_dir.join("logs").join(container);
    let mut runs: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let n = p.file_stem()?.to_str()?.parse::<u64>().ok()?;
            (p.extension()? == "log").then_some((n, p))
        })
        .collect();
    runs.sort();
    runs.into_iter().map(|(_, p)| p).collect()
}

/// RFC 3339 with nanoseconds, fixed width (containerd's log timestamp).
pub fn format_ts(t: Timestamp) -> String {
    let whole = Timestamp::from_second(t.as_second()).unwrap_or(t);
    let s = whole.to_string();
    let date = s.strip_suffix('Z').unwrap_or(&s);
    format!("{date}.{:09}Z", t.subsec_nanosecond().max(0))
}

/// One CRI log record.
pub fn cri_record(t: Timestamp, stream: &str, partial: bool, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 48);
    out.extend_from_slice(format_ts(t).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(msg);
    out.push(b'\n');
    out
}

/// Starts copying the child's stdout and stderr into `file` (created, or
/// appended to). The file counts as open until both streams end.
pub fn capture(child: &mut Child, file: PathBuf, state: &Arc<LogState>) {
    if let Some(parent) = file.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            warn!("log directory {}: {e}", parent.display());
        }
    }
    let out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
    {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            warn!("log file {}: {e}", file.display());
            return;
        }
    };
    state.open.lock().unwrap().insert(file.clone());
    let mut tasks = Vec::new();
    if let Some(s) = child.stdout.take() {
        tasks.push(tokio::spawn(copy_lines(s, "stdout", out.clone())));
    }
    if let Some(s) = child.stderr.take() {
        tasks.push(tokio::spawn(copy_lines(s, "stderr", out)));
    }
    let state = state.clone();
    tokio::spawn(async move {
        for t in tasks {
            let _ = t.await;
        }
        state.open.lock().unwrap().remove(&file);
    });
}

async fn copy_lines(
    mut src: impl AsyncRead + Unpin,
    stream: &'static str,
    out: Arc<Mutex<std::fs::File>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            if !pending.is_empty() {
                write(&out, &cri_record(Timestamp::now(), stream, false, &pending));
            }
            return;
        }
        pending.extend_from_slice(&buf[..n]);
        let t = Timestamp::now();
        let mut records = Vec::new();
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + i];
            for (k, chunk) in line.chunks(MAX_LINE).enumerate() {
                let last = (k + 1) * MAX_LINE >= line.len();
                records.extend(cri_record(t, stream, !last, chunk));
            }
            if line.is_empty() {
                records.extend(cri_record(t, stream, false, b""));
            }
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            records.extend(cri_record(t, stream, true, &pending[..MAX_LINE]));
            pending.drain(..MAX_LINE);
        }
        if !records.is_empty() {
            write(&out, &records);
        }
    }
}

fn write(out: &Mutex<std::fs::File>, data: &[u8]) {
    if let Err(e) = out.lock().unwrap().write_all(data) {
        warn!("writing a container log: {e}");
    }
}

// --- Reading ------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Streams {
    #[default]
    All,
    Stdout,
    Stderr,
}

/// The `/containerLogs` query, as the API server passes it on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub since: Option<Timestamp>,
    pub timestamps: bool,
    pub tail: Option<usize>,
    pub limit: Option<u64>,
    pub follow: bool,
    pub previous: bool,
    pub streams: Streams,
}

fn flag(v: &str) -> Result<bool, String> {
    match v {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid boolean {v:?}")),
    }
}

impl LogOptions {
    /// Parses a query string; `now` anchors sinceSeconds.
    pub fn parse(query: &str, now: Timestamp) -> Result<Self, String> {
        let mut o = LogOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "sinceTime" => {
                    let t: Timestamp = v
                        .parse()
                        .map_err(|e| format!("invalid sinceTime {v:?}: {e}"))?;
                    o.since = Some(t);
                }
                "sinceSeconds" => {
                    let s: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid sinceSeconds {v:?}"))?;
                    if s <= 0 {
                        return Err("sinceSeconds must be positive".into());
                    }
                    o.since = now.checked_sub(SignedDuration::from_secs(s)).ok();
                }
                "timestamps" => o.timestamps = flag(&v)?,
                "follow" => o.follow = flag(&v)?,
                "previous" => o.previous = flag(&v)?,
                "tailLines" => {
                    let n: i64 = v.parse().map_err(|_| format!("invalid tailLines {v:?}"))?;
                    // Negative means "all", as in the kubelet.
                    o.tail = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n: i64 = v.parse().map_err(|_| format!("invalid limitBytes {v:?}"))?;
                    if n <= 0 {
                        return Err("limitBytes must be positive".into());
                    }
                    o.limit = Some(n as u64);
                }
                "stream" => {
                    o.streams = match v.as_str() {
                        "" | "All" => Streams::All,
                        "Stdout" => Streams::Stdout,
                        "Stderr" => Streams::Stderr,
                        _ => return Err(format!("invalid stream {v:?}")),
                    }
                }
                // Ignored by the kubelet too (the container is in the path).
                "container" | "insecureSkipTLSVerifyBackend" => {}
                _ => {}
            }
        }
        if o.tail.is_some() && o.streams != Streams::All {
            // The API server refuses this combination as well.
            return Err("tailLines cannot be combined with a single stream".into());
        }
        Ok(o)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |k: usize| (b[k] as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One parsed CRI record.
struct Record<'a> {
    ts_text: &'a str,
    ts: Timestamp,
    stream: &'a str,
    partial: bool,
    msg: &'a [u8],
}

fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts_text = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let msg = parts.next().unwrap_or(b"");
    Some(Record {
        ts_text,
        ts: ts_text.parse().ok()?,
        stream,
        partial: tag.split(|b| *b == b':').next() == Some(&b"P"[..]),
        msg,
    })
}

/// Turns complete CRI records (`data` ends at a record boundary) into what
/// the kubelet returns, applying since, stream, timestamps and the byte
/// budget (`budget` is decremented; output stops when it reaches 0).
/// tailLines is applied by the caller (it needs the whole file).
pub fn render(data: &[u8], o: &LogOptions, budget: &mut Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if budget.is_some_and(|b| b == 0) {
            break;
        }
        let Some(r) = parse_record(line) else {
            continue;
        };
        if o.since.is_some_and(|s| r.ts < s) {
            continue;
        }
        match (o.streams, r.stream) {
            (Streams::Stdout, "stderr") | (Streams::Stderr, "stdout") => continue,
            _ => {}
        }
        let mut rec = Vec::with_capacity(r.msg.len() + 40);
        if o.timestamps {
            rec.extend_from_slice(r.ts_text.as_bytes());
            rec.push(b' ');
        }
        rec.extend_from_slice(r.msg);
        if !r.partial {
            rec.push(b'\n');
        }
        if let Some(b) = budget.as_mut() {
            let take = (*b).min(rec.len() as u64) as usize;
            rec.truncate(take);
            *b -= take as u64;
        }
        out.extend(rec);
    }
    out
}

/// The start of the last `n` records of `data` (complete records only).
pub fn tail_start(data: &[u8], n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let mut seen = 0;
    // The final byte is the last record's newline.
    let end = data.len().saturating_sub(1);
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// The part of `data` that ends at a record boundary.
pub fn complete(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn file() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend(cri_record(
            ts("2026-01-01T00:00:01Z"),
            "stdout",
            false,
            b"one",
        ));
        d.extend(cri_record(
            ts("2026-01-01T00:00:02.5Z"),
            "stderr",
            false,
            b"two",
        ));
        d.extend(cri_record(
            ts("2026-01-01T00:00:03Z"),
            "stdout",
            true,
            b"thr",
        ));
        d.extend(cri_record(
            ts("2026-01-01T00:00:03Z"),
            "stdout",
            false,
            b"ee",
        ));
        d
    }

    #[test]
    fn records_are_cri_lines_with_fixed_width_timestamps() {
        let r = cri_record(ts("2026-01-01T00:00:02.5Z"), "stderr", false, b"two");
        assert_eq!(r, b"2026-01-01T00:00:02.500000000Z stderr F two\n");
        let p = cri_record(ts("2026-01-01T00:00:03Z"), "stdout", true, b"x");
        assert_eq!(p, b"2026-01-01T00:00:03.000000000Z stdout P x\n");
    }

    #[test]
    fn renders_like_the_kubelet() {
        let o = LogOptions::default();
        assert_eq!(render(&file(), &o, &mut None), b"one\ntwo\nthree\n");
        let o = LogOptions {
            timestamps: true,
            since: Some(ts("2026-01-01T00:00:02Z")),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(render(&file(), &o, &mut None)).unwrap(),
            "2026-01-01T00:00:02.500000000Z two\n2026-01-01T00:00:03.000000000Z thr\
             2026-01-01T00:00:03.000000000Z ee\n"
        );
        let o = LogOptions {
            streams: Streams::Stdout,
            ..Default::default()
        };
        assert_eq!(render(&file(), &o, &mut None), b"one\nthree\n");
        let mut budget = Some(6);
        assert_eq!(
            render(&file(), &LogOptions::default(), &mut budget),
            b"one\ntw"
        );
        assert_eq!(budget, Some(0));
    }

    #[test]
    fn tail_counts_records_from_the_end() {
        let d = file();
        let start = tail_start(&d, 2);
        assert_eq!(
            render(&d[start..], &LogOptions::default(), &mut None),
            b"three\n"
        );
        assert_eq!(tail_start(&d, 10), 0);
        assert_eq!(tail_start(&d, 0), d.len());
        assert_eq!(complete(b"a\nb"), 2);
    }

    #[test]
    fn parses_the_api_servers_query() {
        let now = ts("2026-01-01T00:01:00Z");
        let o = LogOptions::parse(
            "follow=true&sinceTime=2026-01-01T00%3A00%3A02Z&tailLines=5&timestamps=true&limitBytes=100",
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.since, Some(ts("2026-01-01T00:00:02Z")));
        assert_eq!((o.tail, o.limit), (Some(5), Some(100)));
        let o = LogOptions::parse("sinceSeconds=30&previous=true", now).unwrap();
        assert_eq!(o.since, Some(ts("2026-01-01T00:00:30Z")));
        assert!(o.previous);
        assert_eq!(LogOptions::parse("tailLines=-1", now).unwrap().tail, None);
        assert!(LogOptions::parse("sinceTime=yesterday", now).is_err());
        assert!(LogOptions::parse("limitBytes=0", now).is_err());
        assert_eq!(
            LogOptions::parse("stream=Stderr", now).unwrap().streams,
            Streams::Stderr
        );
    }

    #[tokio::test]
    async fn long_lines_are_split_into_partial_records() {
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let dir = std::env::temp_dir().join(format!("sy-kubelet-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("0.log");
        let f = std::fs::File::create(&path).unwrap();
        let task = tokio::spawn(copy_lines(r, "stdout", Arc::new(Mutex::new(f))));
        let long = vec![b'x'; MAX_LINE + 10];
        tokio::io::AsyncWriteExt::write_all(&mut w, &long)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut w, b"\nshort\nlast")
            .await
            .unwrap();
        drop(w);
        task.await.unwrap();
        let data = std::fs::read(&path).unwrap();
        let tags: Vec<&str> = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| std::str::from_utf8(&l[31..39]).unwrap())
            .collect();
        assert_eq!(tags, ["stdout P", "stdout F", "stdout F", "stdout F"]);
        let text = render(&data, &LogOptions::default(), &mut None);
        assert_eq!(text.len(), MAX_LINE + 10 + 1 + 6 + 5);
        assert!(text.ends_with(b"x\nshort\nlast\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
