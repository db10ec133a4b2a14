//! The device side: the agent that registers a device and mints its
//! attestations, the loopback forward proxy that adds them for a browser,
//! and the device CA that issues client certificates.

pub mod agent;
pub mod ca;
pub mod forward;
