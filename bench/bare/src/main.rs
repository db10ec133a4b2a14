//! Bare hyper proxy: listen on 127.0.0.1:19004 with one current_thread
//! runtime and one SO_REUSEPORT listener per thread, forward everything to
//! the bench upstream on 127.0.0.1:19000 over a per-thread keep-alive pool.
//! Threads from argv[1]. No checks, no audit, no headers added.
//!
//! `GET /deny` is answered here, not forwarded: a fixed 403 of the size and
//! headers of sekisho's JSON block page, the floor under sekisho's deny path.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const UPSTREAM: ([u8; 4], u16) = ([127, 0, 0, 1], 19000);

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;
type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// sekisho's answer to a request without attestation, byte for byte.
const DENY_BODY: &str = include_str!("deny.json");

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    let handles: Vec<_> = (0..threads).map(|_| std::thread::spawn(worker)).collect();
    for h in handles {
        let _ = h.join();
    }
}

fn worker() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let addr: SocketAddr = ([127, 0, 0, 1], 19004).into();
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(4096).unwrap();
        let listener = tokio::net::TcpListener::from_std(socket.into()).unwrap();
        let pool: Pool = Rc::default();
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req| forward(pool.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
}

async fn forward(pool: Pool, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() == "/deny" {
        return Ok(deny());
    }
    let ready = {
        let mut p = pool.borrow_mut();
        p.retain(|s| !s.is_closed());
        p.iter().position(SendRequest::is_ready).map(|i| p.swap_remove(i))
    };
    let sender = match ready {
        Some(s) => s,
        None => {
            let tcp = tokio::net::TcpStream::connect(SocketAddr::from(UPSTREAM)).await.unwrap();
            let _ = tcp.set_nodelay(true);
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
            tokio::task::spawn_local(conn);
            s
        }
    };
    let mut sender = sender;
    let resp = sender.send_request(req).await.unwrap();
    // Back to the pool at once: it is taken again only once ready (its
    // answer's body read), as sekisho's pool gives it back at the body's end.
    pool.borrow_mut().push(sender);
    Ok(resp.map(BodyExt::boxed_unsync))
}

fn deny() -> Response<Body> {
    let body = Full::new(Bytes::from_static(DENY_BODY.trim_end().as_bytes())).map_err(|e| match e {});
    Response::builder()
        .status(403)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("sekisho-deny-reason", "attestation_missing")
        .header("sekisho-request-id", "ff2d0e2e00-1")
        .body(BodyExt::boxed_unsync(body))
        .unwrap()
}
