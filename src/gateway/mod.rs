//! The request path: admission, reading the request the one way the
//! gateway trusts, judging it with `decide`, answering a block or
//! forwarding. It reads the hot snapshot (`crate::shared`) and writes the
//! request audit line; it must never touch the store or the disk.

pub mod admission;
pub mod headers;
pub mod pages;
pub mod proxy;
pub mod request;
pub mod rewrite;
pub mod upstream;
