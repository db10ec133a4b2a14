//! Bare pingora: listen on 127.0.0.1:19004, forward everything to the bench
//! upstream on 127.0.0.1:19000 over a keep-alive pool. Threads from argv[1].

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare;

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], 19000).into();
        Ok(Box::new(HttpPeer::new(addr, false, String::new())))
    }
}

fn main() {
    let threads = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf { threads, grace_period_seconds: Some(1), graceful_shutdown_timeout_seconds: Some(1), ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Bare);
    svc.add_tcp("127.0.0.1:19004");
    server.add_service(svc);
    server.run_forever();
}
