//! sekisho's gateway: the adapters around the pure decision engine
//! (`sekisho-policy`), one folder per room:
//!
//! - [`gateway`]: the request path. Gathers facts, calls `decide`, answers
//!   or forwards. Reads the hot snapshot; never touches the store.
//! - [`control`]: the control plane. The admin API, the store, the audit
//!   trail; commits a change durably, then publishes a new snapshot.
//! - [`device`]: the device side. The agent, its forward proxy, the device CA.
//!
//! Below them, shared by all: [`shared`] (the snapshot every request reads),
//! [`config`], [`tls`], [`metrics`] and [`limits`]. [`serve`] wires the rooms
//! together at start-up. No rule logic lives outside the engine; a room uses
//! another only through its public items, and `gateway` → `control` →
//! `device` is the only direction in which they depend on each other.

pub mod admin_client;
mod admin_status;
pub mod admission;
pub mod audit_cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod device;
pub mod gateway;
pub mod handover;
pub mod limits;
pub mod metrics;
pub mod notes;
pub mod notify;
pub mod serve;
pub mod shared;
pub mod sntp;
pub mod tls;
