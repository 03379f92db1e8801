//! The HTTP caching policy of a shared cache (RFC 9111, with RFC 9110 for
//! conditional and range requests, RFC 5861 for stale-while-revalidate and
//! stale-if-error): pure functions over `http` types.
//!
//! Nothing here does I/O or reads the clock: times come in as arguments, so
//! every decision is deterministic and tested as a specification. The
//! functions the edge calls on each hit ([`RequestDirectives::parse`],
//! [`usable`], [`not_modified`], [`range`], [`vary_values`]) do not allocate;
//! a request without Cache-Control or Pragma costs two header lookups to parse.
//!
//! How the edge uses it:
//! - **lookup**: [`RequestDirectives::parse`] the request; key the entry with
//!   [`vary_values`] of the stored [`Vary`]; [`current_age`] of the entry and
//!   [`usable`] decide between a hit, a stale hit with background refresh, and
//!   a revalidation (with [`validators`]); [`not_modified`] and [`range`] shape
//!   the answer (304 with [`not_modified_headers`], 206, 416).
//! - **forward** failed: [`stale_if_error`] says whether the stale entry may answer.
//! - **respond**: [`storable`] gives a miss's [`Freshness`] or why it is not
//!   stored ([`NotStorable::as_str`]); [`initial_age`] dates it; a 304 from
//!   upstream that [`matches_stored`] is merged with [`freshen`]; an unsafe
//!   method's success lists the paths to drop with [`invalidated`].

pub mod conditional;
pub mod directives;
pub mod freshness;
pub mod invalidate;
pub mod range;
pub mod reuse;
pub mod vary;

pub use conditional::{
    etag, freshen, matches_stored, not_modified, not_modified_headers, validators, EntityTag,
};
pub use directives::{RequestDirectives, ResponseDirectives, DELTA_SECONDS_MAX};
pub use freshness::{
    current_age, heuristically_cacheable, initial_age, stale_if_error, storable, usable, Freshness,
    NotStorable, StoreOptions, Use,
};
pub use invalidate::invalidated;
pub use range::{range, RangeAnswer};
pub use vary::{vary, vary_values, Vary};
