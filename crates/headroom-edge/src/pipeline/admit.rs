//! admit: the route's admission policies, in order, before anything is looked up or sent.
//! This is where guard plugs in: each policy is a variant of [`Admission`], compiled from
//! the route's config into `Route::admit` when the snapshot is built, and checked by a
//! match arm here. A route with no policy has an empty list and skips this phase.

use super::context::{ConnCtx, Record};
use super::Answer;
use crate::body::RequestBody;
use headroom_guard::{LimitRequest, RouteLimits, Verdict};
use http::{header, HeaderValue, Request, StatusCode};
use std::sync::Arc;

/// One admission policy of a route.
pub enum Admission {
    /// `[[route.limit]]`: the route's rate limits (headroom-guard), all checked.
    Limit(Arc<RouteLimits>),
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admission::Limit(_) => f.write_str("Limit"),
        }
    }
}

/// Lets the request on, or answers it (429 when a limit says no, 503 when a shared limit
/// cannot be decided and fails closed).
pub(super) async fn admit(
    policies: &[Admission],
    req: &Request<RequestBody>,
    conn: &ConnCtx,
    record: &mut Record,
) -> Result<(), Answer> {
    for policy in policies {
        match policy {
            Admission::Limit(limits) => {
                let client = limits.client(conn.client.ip(), req.headers());
                let verdict = limits
                    .check(&LimitRequest {
                        client,
                        headers: req.headers(),
                    })
                    .await;
                match verdict {
                    Verdict::Pass(fields) => record.rate = fields,
                    Verdict::Limited {
                        limit,
                        retry_after_secs,
                        fields,
                    } => {
                        record.guard = "limited";
                        let mut a = Answer::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limited",
                            format!(
                                "rate limit \"{limit}\" exceeded; retry in {retry_after_secs} s"
                            ),
                        );
                        a.headers = vec![
                            (header::RETRY_AFTER, HeaderValue::from(retry_after_secs)),
                            (headroom_guard::RATELIMIT_POLICY.clone(), fields.policy),
                            (headroom_guard::RATELIMIT.clone(), fields.state),
                        ];
                        return Err(a);
                    }
                    Verdict::Unavailable { limit } => {
                        record.guard = "unavailable";
                        let mut a = Answer::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "rate_limit_unavailable",
                            format!("rate limit \"{limit}\" cannot be decided now (its Redis is unavailable)"),
                        );
                        a.headers = vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))];
                        return Err(a);
                    }
                }
            }
        }
    }
    Ok(())
}
