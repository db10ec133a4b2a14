//! The control plane: the admin API, the durable store, the writer that
//! commits a change with its audit record and then publishes the new
//! snapshot, and the request audit trail. It never decides a request:
//! rules live in the engine.

pub mod admin;
pub mod audit;
pub mod audit_json;
pub mod audit_search;
pub mod backend;
pub mod chain;
pub mod console;
pub mod doctor;
pub mod doctor_certs;
pub mod doctor_steps;
pub mod follower;
pub mod postgres;
pub mod reasons;
pub mod roles;
pub mod store;
pub mod trail;
pub mod trail_writer;
pub mod writer;
