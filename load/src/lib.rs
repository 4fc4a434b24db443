//! Easel's load generator: the benchmark workloads of docs/bench/WORKLOADS.md played by bots
//! over real sockets, measuring what they receive. The `easel-bot` binary runs them; the
//! benchmarks (`cargo xtask bench`) start it beside a server.
//!
//! - `arena`: N bots moving on the workload's fixed schedule (or drawing, or both).
//! - `whiteboard`: W writers and W readers building a 10,000-stroke board, then a late joiner and
//!   the offline merge, every phase verified against the exact expected board.
//! - `soak`: clients coming and going for a long time, some cut off, some breaking rules.
//! - `cluster`: three nodes on one PostgreSQL: join times through redirects, failover after
//!   `kill -9`, and what the leases cost the database.
//! - `idle`: connections that join and then say nothing: what they cost the server.
//! - `measure`: the milestones a harness samples the server at, and percentiles.
//! - `postgres`: a private PostgreSQL, for the cluster's benchmark and tests.

pub mod arena;
pub mod cluster;
pub mod idle;
pub mod measure;
pub mod postgres;
pub mod soak;
pub mod whiteboard;
