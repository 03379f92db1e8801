//! headroom's HTTP cache: a shared cache (RFC 9111) compiled per route from its page rules,
//! with a memory tier (size-bounded, TinyLFU admission) and an optional Redis tier shared by
//! every headroom instance, request coalescing, purge and compression.
//!
//! The edge calls it from two places: the `lookup` phase (a hit answers there) and the
//! response on its way back (a storable miss is stored as it streams to its client).

pub mod compress;
pub mod policy;
