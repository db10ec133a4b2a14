//! openloop: an open-loop (wrk2-style) HTTP/1.1 load generator for
//! `bench/run.sh` (`OPENLOOP=1`).
//!
//! It offers a fixed request rate R over C keep-alive connections for D
//! seconds. Request i is *intended* to start at t0 + i/R whatever the server
//! is doing, and its latency runs from that intended time to the end of its
//! response.
//!
//! Why: a closed-loop tool (wrk, h2load) sends a connection's next request
//! only once the previous one has been answered. When the server stalls, the
//! tool stops sending, so the requests a real client would have sent during
//! the stall are never measured: "coordinated omission", which hides most of
//! the tail. Here a stall shows up as the wait of every request queued behind
//! it, and comparing proxies at the same offered rate (below their peak) says
//! what latency users see at a given load, which peak throughput does not.
//!
//! A pacer task releases one permit per intended send time and any idle
//! connection takes the next one. The pacer sleeps on a timerfd (Linux only):
//! tokio's own timer ticks in whole milliseconds, and a separate sleeping
//! thread costs two context switches per tick on the load generator's core.
//! Permits left untaken at the end (the server or this generator could not
//! keep up) are reported as `unsent`. Prints one JSON line: requested and
//! achieved rate, responses, errors, non-2xx responses, unsent, and
//! p50/p90/p99/p99.9/max latency in µs.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const USAGE: &str = "usage: openloop --url http://HOST:PORT/PATH --rate REQ_PER_SEC \
[--connections N (32)] [--duration SECS (10)] [--timeout SECS (10)] [-H 'Name: value']...";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Sender = SendRequest<Empty<Bytes>>;

struct Args {
    addr: String,
    path: Uri,
    headers: HeaderMap,
    rate: f64,
    conns: usize,
    duration: Duration,
    timeout: Duration,
}

/// What the connections share: the request, the schedule and the send permits.
struct Shared {
    args: Args,
    permits: Semaphore,
    next: AtomicU64,
    t0: Instant,
}

/// One connection's results, then all of them.
#[derive(Clone)]
struct Tally {
    hist: Histogram<u64>,
    responses: u64,
    errors: u64,
    non_2xx: u64,
}

fn num<T: FromStr>(flag: &str, val: &str) -> Result<T, String> {
    val.parse().map_err(|_| format!("{flag}: {val:?} is not a valid number"))
}

fn parse_args() -> Result<Option<Args>, String> {
    let (mut url, mut rate, mut conns, mut duration, mut timeout) = (None, None, 32usize, 10.0f64, 10.0f64);
    let mut headers = HeaderMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let val = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--url" | "-u" => url = Some(val),
            "--rate" | "-R" => rate = Some(num::<f64>(&flag, &val)?),
            "--connections" | "-c" => conns = num(&flag, &val)?,
            "--duration" | "-d" => duration = num(&flag, &val)?,
            "--timeout" => timeout = num(&flag, &val)?,
            "--header" | "-H" => {
                let (name, value) =
                    val.split_once(':').ok_or_else(|| format!("header {val:?} is not 'Name: value'"))?;
                let name = HeaderName::from_str(name.trim()).map_err(|_| format!("bad header name {name:?}"))?;
                let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("bad value for header {name}"))?;
                headers.append(name, value);
            }
            _ => return Err(format!("unknown option {flag:?}\n{USAGE}")),
        }
    }
    let url = url.ok_or_else(|| format!("--url is required\n{USAGE}"))?;
    let rate = rate.ok_or_else(|| format!("--rate is required\n{USAGE}"))?;
    let within = |v: f64, max: f64| v > 0.0 && v <= max; // false for NaN
    if !within(rate, 1e7) || !(1..=10_000).contains(&conns) || !within(duration, 86_400.0) || !within(timeout, 3_600.0)
    {
        return Err(
            "need 0 < --rate <= 1e7, 1 <= --connections <= 10000, 0 < --duration <= 86400, 0 < --timeout <= 3600"
                .into(),
        );
    }
    let uri: Uri = url.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {url:?}: only http:// URLs are supported"));
    }
    let authority = uri.authority().ok_or_else(|| format!("--url {url:?} has no host"))?;
    let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
    if !headers.contains_key(HOST) {
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| format!("--url {url:?}: bad host"))?;
        headers.insert(HOST, host);
    }
    let path =
        Uri::from_str(uri.path_and_query().map_or("/", |p| p.as_str())).map_err(|e| format!("--url {url:?}: {e}"))?;
    let (duration, timeout) = (Duration::from_secs_f64(duration), Duration::from_secs_f64(timeout));
    Ok(Some(Args { addr, path, headers, rate, conns, duration, timeout }))
}

async fn connect(addr: &str) -> Result<Sender, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on this connection (reconnecting first if it was lost); the response status.
async fn request(sender: &mut Option<Sender>, args: &Args) -> Result<u16, BoxError> {
    if sender.as_ref().is_some_and(Sender::is_closed) {
        *sender = None;
    }
    let s = match sender {
        Some(s) => s,
        None => sender.insert(connect(&args.addr).await?),
    };
    s.ready().await?;
    let mut req = Request::get(args.path.clone()).body(Empty::new())?;
    *req.headers_mut() = args.headers.clone();
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// A connection's loop: take the next due send time, send, record latency from that time.
async fn connection(mut sender: Option<Sender>, sh: Arc<Shared>, mut tally: Tally) -> Tally {
    while let Ok(permit) = sh.permits.acquire().await {
        permit.forget();
        let intended = sh.t0 + Duration::from_secs_f64(sh.next.fetch_add(1, Ordering::Relaxed) as f64 / sh.args.rate);
        match tokio::time::timeout(sh.args.timeout, request(&mut sender, &sh.args)).await {
            Ok(Ok(status)) => {
                tally.hist.saturating_record(intended.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                tally.responses += 1;
                tally.non_2xx += u64::from(!(200..300).contains(&status));
            }
            Ok(Err(_)) | Err(_) => {
                tally.errors += 1;
                sender = None;
            }
        }
    }
    tally
}

/// A timerfd for tokio to wait on. It owns its fd for its whole life, which is
/// all `AsyncFd` asks (`new` is deprecated for the unsafe `register`, which
/// states that contract; this crate forbids unsafe code).
struct Timer(TimerFd);
impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Releases one permit per intended send time, then returns at t0 + duration.
async fn pace(sh: &Shared, total: u64) -> Result<(), BoxError> {
    let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
    #[allow(deprecated)]
    let timer = AsyncFd::new(Timer(TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?))?;
    let (t0, rate, mut released) = (sh.t0, sh.args.rate, 0u64);
    loop {
        let due = ((t0.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        if due > released {
            sh.permits.add_permits((due - released) as usize);
            released = due;
        }
        let next =
            if released < total { t0 + Duration::from_secs_f64(released as f64 / rate) } else { t0 + sh.args.duration };
        let wait = next.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            if released == total {
                return Ok(());
            }
            tokio::task::yield_now().await;
            continue;
        }
        timer.get_ref().0.set(Expiration::OneShot(TimeSpec::from_duration(wait)), TimerSetTimeFlags::empty())?;
        while timer.readable().await?.try_io(|t| t.get_ref().0.wait().map_err(std::io::Error::from)).is_err() {}
    }
}

async fn run(args: Args) -> Result<String, String> {
    let mut senders = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        senders.push(connect(&args.addr).await.map_err(|e| format!("cannot connect to {}: {e}", args.addr))?);
    }
    let hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))?;
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    let sh = Arc::new(Shared { args, permits: Semaphore::new(0), next: AtomicU64::new(0), t0: Instant::now() });
    let pacer = tokio::spawn({
        let sh = sh.clone();
        async move {
            let paced = pace(&sh, total).await;
            sh.permits.close(); // the connections stop taking requests
            paced
        }
    });
    let tally = Tally { hist, responses: 0, errors: 0, non_2xx: 0 };
    let tasks: Vec<_> =
        senders.into_iter().map(|s| tokio::spawn(connection(Some(s), sh.clone(), tally.clone()))).collect();
    let mut all = tally;
    for task in tasks {
        let t = task.await.map_err(|e| format!("connection task failed: {e}"))?;
        all.hist.add(&t.hist).map_err(|e| format!("histogram: {e}"))?;
        all.responses += t.responses;
        all.errors += t.errors;
        all.non_2xx += t.non_2xx;
    }
    let achieved = all.responses as f64 / sh.t0.elapsed().as_secs_f64();
    pacer.await.map_err(|e| format!("pacer: {e}"))?.map_err(|e| format!("pacer: {e}"))?;
    let (rate, unsent, max) = (sh.args.rate, total.saturating_sub(sh.next.load(Ordering::Relaxed)), all.hist.max());
    let [p50, p90, p99, p999] = [0.5, 0.9, 0.99, 0.999].map(|q| all.hist.value_at_quantile(q));
    let Tally { responses, errors, non_2xx, .. } = all;
    Ok(format!(
        "{{\"rate\":{rate:.1},\"achieved_rate\":{achieved:.1},\"requests\":{responses},\"errors\":{errors},\"non_2xx\":{non_2xx},\
\"unsent\":{unsent},\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"max_us\":{max}}}"
    ))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("openloop: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
    match rt.map_err(|e| format!("tokio runtime: {e}")).and_then(|rt| rt.block_on(run(args))) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("openloop: {e}");
            ExitCode::FAILURE
        }
    }
}
