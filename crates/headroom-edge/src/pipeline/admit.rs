//! admit: the route's admission policies, in order, before anything is looked up or sent.
//! This is where guard plugs in (API keys and JWT, access rules, rate limits, load
//! shedding): each becomes a variant of [`Admission`], compiled from the route's config into
//! `Route::admit` when the snapshot is built, and checked by a match arm here. A route with
//! no policy has an empty list and skips this phase.

use super::context::Record;
use super::Answer;
use crate::body::RequestBody;
use http::Request;

/// One admission policy of a route. None exist yet: the guard issue adds them (see the
/// module doc). Uninhabited until then, so a list of them is always empty.
#[derive(Debug)]
pub enum Admission {}

/// Lets the request on, or answers it (401, 403, 429, 503 when shedding).
pub(super) async fn admit(
    policies: &[Admission],
    _req: &Request<RequestBody>,
    _record: &mut Record,
) -> Result<(), Answer> {
    // Never loops while `Admission` has no variant; the loop is the phase's real shape.
    #[allow(clippy::never_loop)]
    for policy in policies {
        match *policy {}
    }
    Ok(())
}
