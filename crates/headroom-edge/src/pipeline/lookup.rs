//! lookup: the route's cache rule. This is where the cache plugs in: a variant of
//! [`CacheRule`] compiled into `Route::cache` at snapshot build time; a hit answers here
//! (and `respond` serves it like any response), a miss goes on to `forward`, and filling the
//! cache happens as the response streams through `respond`. A route without a rule has
//! `cache: None` and skips this phase.

use super::context::Record;
use crate::body::{ClientBody, RequestBody};
use http::{Request, Response};

/// A route's cache rule. None exist yet: the cache issue adds them. Uninhabited until then.
#[derive(Debug)]
pub enum CacheRule {}

/// A hit's response (`Some`), or `None` to go on to `forward`.
pub(super) async fn lookup(
    rule: &CacheRule,
    _req: &Request<RequestBody>,
    _record: &mut Record,
) -> Option<Response<ClientBody>> {
    match *rule {}
}
