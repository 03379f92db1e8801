//! admit: the route's admission policies, in order, before anything is looked up or sent.
//! This is where guard plugs in: each policy is a variant of [`Admission`], compiled from
//! the route's config into `Route::admit` when the snapshot is built, and checked by a
//! match arm here. A route with no policy has an empty list and skips this phase.

use super::context::{ConnCtx, Record};
use super::Answer;
use crate::body::RequestBody;
use headroom_guard::{
    Access, AccessRules, AuthVerdict, Consumer, Cors, CorsVerdict, LimitRequest, RouteAuth,
    RouteLimits, Verdict,
};
use http::{header, HeaderValue, Request, StatusCode};
use std::sync::Arc;

/// One admission policy of a route.
pub enum Admission {
    /// `[route.cors]`: preflights answered here, CORS fields on allowed origins' responses.
    Cors(Arc<Cors>),
    /// `[route.access]`: client address allow/deny lists, the route's body limit.
    Access(Arc<AccessRules>),
    /// `[route.auth]`: who is calling (headroom-guard); then that consumer's own limits.
    Auth(Arc<RouteAuth>),
    /// `[[route.limit]]`: the route's rate limits (headroom-guard), all checked.
    Limit(Arc<RouteLimits>),
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Admission::Cors(_) => f.write_str("Cors"),
            Admission::Access(_) => f.write_str("Access"),
            Admission::Auth(_) => f.write_str("Auth"),
            Admission::Limit(_) => f.write_str("Limit"),
        }
    }
}

/// Lets the request on, or answers it: 401 (no or bad credentials), 403 (a consumer the
/// route does not admit), 429 (a limit said no), 503 (a shared limit cannot be decided and
/// fails closed).
///
/// An authenticated request comes back with its [`Admitted`]: the identity headers are set
/// (and the credentials removed) by [`Admitted::apply`] just before forwarding, once the
/// phases that read the request as the client sent it are done.
pub(super) async fn admit(
    policies: &[Admission],
    req: &Request<RequestBody>,
    conn: &ConnCtx,
    record: &mut Record,
) -> Result<Option<Admitted>, Answer> {
    let mut admitted: Option<Admitted> = None;
    let mut claim_keys: Vec<(Box<str>, String)> = Vec::new();
    for policy in policies {
        match policy {
            Admission::Cors(cors) => match cors.check(req.method(), req.headers()) {
                CorsVerdict::None => {}
                CorsVerdict::Actual(fields) => record.response_fields.extend(fields),
                CorsVerdict::Preflight(fields) => {
                    record.guard = "cors_preflight";
                    return Err(preflight(fields));
                }
                CorsVerdict::Refused(why) => {
                    record.guard = "cors_refused";
                    return Err(Answer::new(
                        StatusCode::FORBIDDEN,
                        "cors_forbidden",
                        format!("CORS preflight refused: {why}"),
                    ));
                }
            },
            Admission::Access(rules) => {
                let declared = http_body::Body::size_hint(req.body()).lower();
                match rules.check(conn.client.ip(), req.headers(), declared) {
                    Access::Allowed => {}
                    Access::Denied(ip) => {
                        record.guard = "denied";
                        return Err(Answer::new(
                            StatusCode::FORBIDDEN,
                            "forbidden",
                            format!("{ip} may not use this route"),
                        ));
                    }
                    Access::TooLarge(max) => return Err(Answer::body_too_large(max)),
                }
            }
            Admission::Auth(auth) => {
                let (who, claims) = match auth.check(req.headers(), req.uri()).await {
                    AuthVerdict::Pass(c, claims) => (c, claims),
                    verdict => return Err(refused(auth, verdict, record)),
                };
                record.consumer = Some(who.clone());
                if let Some(limits) = &who.limits {
                    limit(limits, req, conn, Some(&who.name), &[], record).await?;
                }
                claim_keys = claims.keys;
                admitted = Some(Admitted {
                    auth: auth.clone(),
                    consumer: who,
                    claims: claims.headers,
                });
            }
            Admission::Limit(limits) => {
                let consumer = admitted.as_ref().map(|a| &*a.consumer.name);
                limit(limits, req, conn, consumer, &claim_keys, record).await?
            }
        }
    }
    Ok(admitted)
}

/// An authenticated request's consumer, and the route auth that found it.
pub(super) struct Admitted {
    auth: Arc<RouteAuth>,
    consumer: Arc<Consumer>,
    /// A token's claims for the upstream (header, value).
    claims: Vec<(http::HeaderName, HeaderValue)>,
}

impl Admitted {
    /// The credentials and client-sent identity headers out, the consumer's in.
    pub(super) fn apply(self, req: &mut Request<RequestBody>) {
        self.auth
            .forward(&self.consumer, self.claims, req.headers_mut());
        if self.auth.reads_query() {
            self.auth.strip_query(req.uri_mut());
        }
    }
}

/// 401 or 403 for a request auth did not let on.
fn refused(auth: &RouteAuth, verdict: AuthVerdict, record: &mut Record) -> Answer {
    match verdict {
        AuthVerdict::Forbidden(c) => {
            record.guard = "forbidden";
            record.consumer = Some(c.clone());
            Answer::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("consumer \"{}\" may not use this route", c.name),
            )
        }
        v => {
            let missing = matches!(v, AuthVerdict::Missing);
            record.guard = if missing {
                "unauthenticated"
            } else {
                "bad_credentials"
            };
            let mut a = Answer::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                if missing {
                    "credentials required"
                } else {
                    "the credentials are not valid"
                },
            );
            a.headers = vec![(header::WWW_AUTHENTICATE, auth.challenge.clone())];
            a
        }
    }
}

/// One set of limits: on, or 429 / 503.
async fn limit(
    limits: &RouteLimits,
    req: &Request<RequestBody>,
    conn: &ConnCtx,
    consumer: Option<&str>,
    claims: &[(Box<str>, String)],
    record: &mut Record,
) -> Result<(), Answer> {
    let client = limits.client(conn.client.ip(), req.headers());
    let verdict = limits
        .check(&LimitRequest {
            client,
            headers: req.headers(),
            consumer,
            claims,
        })
        .await;
    match verdict {
        Verdict::Pass(fields) => {
            if let Some(f) = fields {
                record
                    .response_fields
                    .push((headroom_guard::RATELIMIT_POLICY.clone(), f.policy));
                record
                    .response_fields
                    .push((headroom_guard::RATELIMIT.clone(), f.state));
            }
            Ok(())
        }
        Verdict::Limited {
            limit,
            retry_after_secs,
            fields,
        } => {
            record.guard = "limited";
            let mut a = Answer::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("rate limit \"{limit}\" exceeded; retry in {retry_after_secs} s"),
            );
            a.headers = vec![
                (header::RETRY_AFTER, HeaderValue::from(retry_after_secs)),
                (headroom_guard::RATELIMIT_POLICY.clone(), fields.policy),
                (headroom_guard::RATELIMIT.clone(), fields.state),
            ];
            Err(a)
        }
        Verdict::Unavailable { limit } => {
            record.guard = "unavailable";
            let mut a = Answer::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                format!("rate limit \"{limit}\" cannot be decided now (its Redis is unavailable)"),
            );
            a.headers = vec![(header::RETRY_AFTER, HeaderValue::from_static("1"))];
            Err(a)
        }
    }
}

/// A preflight's answer: 204, no body, the CORS fields.
fn preflight(fields: Vec<(http::HeaderName, HeaderValue)>) -> Answer {
    let mut a = Answer::new(StatusCode::NO_CONTENT, "cors_preflight", "");
    a.headers = fields;
    a
}
