//! Prometheus counters for `/metrics`: requests by outcome and reason,
//! a latency histogram, upstream errors. Lock-free atomics only; it must
//! never allocate on the request path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use sekisho_policy::DenyReason;

/// The reason codes of the gateway's own blocks (not policy denials), as
/// `gateway::pages::Block::code` names them; a test there keeps the two equal.
pub const BLOCK_KINDS: [&str; 7] = [
    "unknown_host",
    "bad_request",
    "upstream_unavailable",
    "upstream_timeout",
    "rate_limited",
    "state_unavailable",
    "request_timeout",
];

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 12] =
    [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000, 2_500_000, 10_000_000];

/// Request totals at one moment (see [`Metrics::counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub allowed: u64,
    /// Every reason code with its total, in a fixed order.
    pub by_reason: Vec<(&'static str, u64)>,
}

#[derive(Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: [AtomicU64; DenyReason::ALL.len()],
    blocked: [AtomicU64; BLOCK_KINDS.len()],
    upstream_errors: AtomicU64,
    connections_refused: AtomicU64,
    header_timeouts: AtomicU64,
    slow_readers: AtomicU64,
    stalled_streams: AtomicU64,
    parked: AtomicI64,
    latency: [AtomicU64; BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    pub fn allowed(&self) {
        self.allowed.fetch_add(1, Relaxed);
    }

    pub fn denied(&self, reason: DenyReason) {
        if let Some(i) = DenyReason::ALL.iter().position(|r| *r == reason) {
            self.denied[i].fetch_add(1, Relaxed);
        }
    }

    pub fn blocked(&self, kind: &'static str) {
        if let Some(i) = BLOCK_KINDS.iter().position(|k| *k == kind) {
            self.blocked[i].fetch_add(1, Relaxed);
        }
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }

    /// A connection over its address's cap was closed at once.
    pub fn connection_refused(&self) -> u64 {
        self.connections_refused.fetch_add(1, Relaxed)
    }

    /// A client that read its answers slower than the minimum rate was cut.
    pub fn slow_reader(&self) {
        self.slow_readers.fetch_add(1, Relaxed);
    }

    pub fn stalled_stream(&self) {
        self.stalled_streams.fetch_add(1, Relaxed);
    }

    /// An idle connection parked (+1) or woke or closed (-1).
    pub fn parked(&self, change: i64) {
        self.parked.fetch_add(change, Relaxed);
    }

    /// A request header missed its deadline (slowloris).
    pub fn header_timeout(&self) {
        self.header_timeouts.fetch_add(1, Relaxed);
    }

    pub fn latency(&self, micros: u64) {
        let i = BUCKETS_US.iter().position(|b| micros <= *b).unwrap_or(BUCKETS_US.len());
        self.latency[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(micros, Relaxed);
    }

    /// Totals since start by reason (policy denials, then the gateway's
    /// own blocks), for the console's view of the last hour.
    pub fn counts(&self) -> Counts {
        let denied = DenyReason::ALL.iter().map(|r| r.code()).zip(&self.denied);
        let blocked = BLOCK_KINDS.iter().copied().zip(&self.blocked);
        Counts {
            allowed: self.allowed.load(Relaxed),
            by_reason: denied.chain(blocked).map(|(code, n)| (code, n.load(Relaxed))).collect(),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self, snapshot_age_secs: f64, live_requests: u64) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP sekisho_requests_total Requests by decision and reason.\n# TYPE sekisho_requests_total counter"
        );
        let _ =
            writeln!(out, "sekisho_requests_total{{decision=\"allow\",reason=\"\"}} {}", self.allowed.load(Relaxed));
        for (r, n) in DenyReason::ALL.iter().zip(&self.denied) {
            let _ = writeln!(
                out,
                "sekisho_requests_total{{decision=\"deny\",reason=\"{}\"}} {}",
                r.code(),
                n.load(Relaxed)
            );
        }
        for (k, n) in BLOCK_KINDS.iter().zip(&self.blocked) {
            let _ = writeln!(out, "sekisho_requests_total{{decision=\"error\",reason=\"{k}\"}} {}", n.load(Relaxed));
        }
        let _ = writeln!(out, "# HELP sekisho_upstream_errors_total Failed upstream connections or exchanges.\n# TYPE sekisho_upstream_errors_total counter");
        let _ = writeln!(out, "sekisho_upstream_errors_total {}", self.upstream_errors.load(Relaxed));
        let _ = writeln!(out, "# HELP sekisho_connections_refused_total Connections closed at once: over the per-address cap.\n# TYPE sekisho_connections_refused_total counter");
        let _ = writeln!(out, "sekisho_connections_refused_total {}", self.connections_refused.load(Relaxed));
        let _ = writeln!(out, "# HELP sekisho_header_timeouts_total Connections cut for a request header past its deadline.\n# TYPE sekisho_header_timeouts_total counter");
        let _ = writeln!(out, "sekisho_header_timeouts_total {}", self.header_timeouts.load(Relaxed));
        let _ = writeln!(out, "# HELP sekisho_slow_readers_total Connections cut for reading answers slower than the minimum rate.\n# TYPE sekisho_slow_readers_total counter");
        let _ = writeln!(out, "sekisho_slow_readers_total {}", self.slow_readers.load(Relaxed));
        let _ = writeln!(out, "# HELP sekisho_stalled_streams_total HTTP/2 streams reset for taking answers slower than the minimum rate.\n# TYPE sekisho_stalled_streams_total counter");
        let _ = writeln!(out, "sekisho_stalled_streams_total {}", self.stalled_streams.load(Relaxed));
        let _ = writeln!(out, "# HELP sekisho_parked_connections Idle HTTP/1 connections holding no HTTP buffers until their next request.\n# TYPE sekisho_parked_connections gauge");
        let _ = writeln!(out, "sekisho_parked_connections {}", self.parked.load(Relaxed));
        let _ = writeln!(out, "# HELP sekisho_request_duration_seconds Time from request header to audit.\n# TYPE sekisho_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (b, n) in BUCKETS_US.iter().zip(&self.latency) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(out, "sekisho_request_duration_seconds_bucket{{le=\"{}\"}} {cumulative}", *b as f64 / 1e6);
        }
        cumulative += self.latency[BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(out, "sekisho_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ =
            writeln!(out, "sekisho_request_duration_seconds_sum {}", self.latency_sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "sekisho_request_duration_seconds_count {cumulative}");
        let _ = writeln!(out, "# HELP sekisho_state_snapshot_age_seconds Seconds since the state snapshot was built.\n# TYPE sekisho_state_snapshot_age_seconds gauge");
        let _ = writeln!(out, "sekisho_state_snapshot_age_seconds {snapshot_age_secs}");
        let _ = writeln!(
            out,
            "# HELP sekisho_live_requests Requests being proxied now.\n# TYPE sekisho_live_requests gauge"
        );
        let _ = writeln!(out, "sekisho_live_requests {live_requests}");
        out
    }
}

/// The state store as the control plane last saw it (`Writer::metrics`).
pub struct StoreGauges {
    pub backend: &'static str,
    /// Requests are being served: the state was confirmed within `state_max_age_secs`.
    pub fresh: bool,
    /// The last confirmation reached the store.
    pub reachable: bool,
    pub confirmed_age_secs: f64,
    /// The store position (PostgreSQL: change-log number) the state is at.
    pub position: i64,
}

impl StoreGauges {
    /// Prometheus text, appended to [`Metrics::render`]'s.
    pub fn render(&self) -> String {
        let b = self.backend;
        format!(
            "# HELP sekisho_state_fresh 1 while the state is confirmed within state_max_age_secs; 0: requests fail closed (state_unavailable).\n\
             # TYPE sekisho_state_fresh gauge\nsekisho_state_fresh{{backend=\"{b}\"}} {}\n\
             # HELP sekisho_state_store_up 1 if the last confirmation reached the state store.\n\
             # TYPE sekisho_state_store_up gauge\nsekisho_state_store_up{{backend=\"{b}\"}} {}\n\
             # HELP sekisho_state_confirmed_age_seconds Seconds since the state was last confirmed against the store.\n\
             # TYPE sekisho_state_confirmed_age_seconds gauge\nsekisho_state_confirmed_age_seconds {}\n\
             # HELP sekisho_state_log_position The store position (change-log number) the state is at.\n\
             # TYPE sekisho_state_log_position gauge\nsekisho_state_log_position {}\n",
            u8::from(self.fresh),
            u8::from(self.reachable),
            self.confirmed_age_secs,
            self.position,
        )
    }
}
