//! sekisho's decision engine. Given the facts of one request, a snapshot of
//! the rules and state, and the current instant, [`decide`] answers Allow or
//! Deny with a named reason. This crate owns every rule; it must never do
//! I/O, read the clock, spawn, or depend on the proxy, the store or a runtime.

pub mod attestation;
pub mod body;
pub mod decision;
pub mod device;
pub mod engine;
pub mod form;
pub mod holidays;
pub mod mynumber;
pub mod path;
pub mod posture;
pub mod rules;
pub mod schedule;
pub mod state;

pub use decision::{Allow, Basis, Decision, Deny, DenyReason, Inspect};
pub use engine::{client_addr, decide, next_open, Attestation, ClientAddr, RequestFacts};
pub use rules::{Profile, Route, Rules, RulesError};
pub use state::State;
