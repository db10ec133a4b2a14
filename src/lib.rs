//! sekisho's gateway: the adapters around the pure decision engine
//! (`sekisho-policy`). The proxy gathers facts and calls `decide`; the admin
//! API validates input and commits to the store; everything else (TLS, the
//! audit trail, block pages, metrics, limits) serves those two. No rule
//! logic lives here. The `sekisho` binary is a thin command line over it.

pub mod admin;
pub mod admin_client;
pub mod admission;
pub mod agent;
pub mod audit;
pub mod ca;
pub mod config;
pub mod demo;
pub mod forward;
pub mod limits;
pub mod metrics;
pub mod pages;
pub mod proxy;
pub mod request;
pub mod rewrite;
pub mod serve;
pub mod shared;
pub mod store;
pub mod tls;
pub mod upstream;
