//! The device side: the agent that registers a device and mints its
//! attestations, the loopback forward proxy that adds them for a browser,
//! the device CA that issues client certificates, and the enrollment
//! bundles phones and tablets install them from.

pub mod agent;
pub mod ca;
pub mod enroll;
pub mod forward;
