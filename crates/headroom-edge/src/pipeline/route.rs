//! route: the first route that matches the request, in file order, and for a `split` the
//! target its weights draw.

use super::context::{ConnCtx, Record};
use super::Answer;
use crate::body::RequestBody;
use crate::snapshot::{Route, RouteAction, Snapshot, Target};
use http::{Request, StatusCode};

/// A matched route and, when it forwards, the target chosen.
pub(super) struct Routed<'s> {
    pub route: &'s Route,
    pub target: Option<&'s Target>,
}

/// 404 `no_route` when nothing matches. Records the route and target indices.
pub(super) fn route<'s>(
    snap: &'s Snapshot,
    req: &Request<RequestBody>,
    host: &str,
    conn: &ConnCtx,
    record: &mut Record,
) -> Result<Routed<'s>, Answer> {
    let Some((index, route)) = snap.route(
        conn.listener,
        req.method(),
        host,
        req.uri().path(),
        req.headers(),
    ) else {
        return Err(Answer::new(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "no route matches {} {}{}",
                req.method(),
                host,
                req.uri().path()
            ),
        ));
    };
    record.route = Some(index);
    let target = match &route.action {
        RouteAction::Forward(t) => {
            record.target = Some(0);
            Some(t)
        }
        RouteAction::Split { targets, total } => {
            let roll = fastrand::u32(..*total);
            let i = targets
                .iter()
                .position(|(_, cumulative)| roll < *cumulative)
                .unwrap_or(0);
            record.target = Some(i);
            Some(&targets[i].0)
        }
        RouteAction::Redirect { .. } | RouteAction::Respond { .. } => None,
    };
    Ok(Routed { route, target })
}
