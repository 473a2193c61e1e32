//! What duplex's tests, examples and benchmarks share, in one dev-only
//! crate (`publish = false`) instead of files reached by `#[path]`:
//!
//! - [`redis`]: a `redis-server` on a free loopback port, killed on drop,
//!   and `redis-cli`;
//! - [`cluster`]: a Redis Cluster of such servers;
//! - [`nats`]: a `nats-server` with JetStream;
//! - [`pki`]: a CA and leaf certificates made at run time (rcgen).
//!
//! Every server is started by the test that needs it, on ports nothing
//! else uses, never the one a machine may already run; the test command
//! installs the Debian packages they need.

pub mod cluster;
pub mod nats;
pub mod pki;
pub mod redis;

pub use redis::{Redis, cli, free_port};
