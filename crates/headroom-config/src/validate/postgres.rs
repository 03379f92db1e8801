//! `[[postgres]]`: listeners of the SQL plane.

use crate::error::Reporter;
use crate::model::postgres as model;
use crate::postgres::*;
use toml::Spanned;

pub(crate) fn validate_postgres(
    r: &mut Reporter,
    raw: &[Spanned<model::Postgres>],
    http_binds: &[std::net::SocketAddr],
) -> Vec<PostgresConfig> {
    let mut out: Vec<PostgresConfig> = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let at = p.span().start;
        let p = p.get_ref();
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| format!("postgres-{}", i + 1));
        let key = |k: &str| Some(format!("postgres \"{name}\": {k}"));
        if out.iter().any(|o| o.name == name) {
            r.error(at, key("name"), format!("name \"{name}\" is used twice"));
        }
        let addr =
            |r: &mut Reporter, s: &Spanned<String>, k: &str| match super::resolve_addr(s.get_ref())
            {
                Ok(a) => Some(a),
                Err(e) => {
                    r.error(s.span().start, key(k), e);
                    None
                }
            };
        let bind = addr(r, &p.bind, "bind");
        let primary = addr(r, &p.primary, "primary");
        if let Some(b) = bind {
            if b.port() != 0 && (out.iter().any(|o| o.bind == b) || http_binds.contains(&b)) {
                r.error(
                    p.bind.span().start,
                    key("bind"),
                    format!("{b} is bound by two listeners"),
                );
            }
        }
        if p.pool_size == 0 {
            r.error(at, key("pool_size"), "must be at least 1");
        }
        if p.min_idle > p.pool_size {
            r.error(
                at,
                key("min_idle"),
                format!("must be at most pool_size ({})", p.pool_size),
            );
        }
        for (k, d) in [
            ("queue_timeout", &p.queue_timeout),
            ("connect_timeout", &p.connect_timeout),
            ("server_lifetime", &p.server_lifetime),
            ("server_idle_timeout", &p.server_idle_timeout),
        ] {
            if d.0.is_zero() {
                r.error(at, key(k), "must be more than 0s");
            }
        }
        if p.max_message.0 < 1 << 16 {
            r.error(at, key("max_message"), "must be at least 64KiB");
        }
        if p.user.is_empty() {
            r.error(
                at,
                key("user"),
                "no [[postgres.user]]: add who may log in, like\n\n[[postgres.user]]\nname = \"app\"\npassword = \"...\"",
            );
        }
        let mut users: Vec<PostgresUser> = Vec::new();
        for u in &p.user {
            let u = u.get_ref();
            let uname = u.name.get_ref();
            if uname.is_empty() || uname.contains('\0') {
                r.error(u.name.span().start, key("user.name"), "must be a role name");
            }
            if users.iter().any(|o| &o.name == uname) {
                r.error(
                    u.name.span().start,
                    key("user.name"),
                    format!("user \"{uname}\" is listed twice"),
                );
            }
            if u.password.get_ref().is_empty() {
                r.error(
                    u.password.span().start,
                    key("user.password"),
                    "must not be empty",
                );
            }
            users.push(PostgresUser {
                name: uname.clone(),
                password: u.password.get_ref().clone(),
            });
        }
        let (Some(bind), Some(primary)) = (bind, primary) else {
            continue;
        };
        out.push(PostgresConfig {
            name,
            bind,
            primary,
            pool_mode: p.pool_mode,
            pool_size: p.pool_size.max(1),
            min_idle: p.min_idle.min(p.pool_size),
            queue_timeout: p.queue_timeout.0,
            connect_timeout: p.connect_timeout.0,
            server_lifetime: p.server_lifetime.0,
            server_idle_timeout: p.server_idle_timeout.0,
            server_reset_query: Some(p.server_reset_query.trim().to_owned())
                .filter(|q| !q.is_empty()),
            max_client_conn: p.max_client_conn.max(1),
            max_message: usize::try_from(p.max_message.0).unwrap_or(usize::MAX),
            databases: p.databases.clone(),
            users,
        });
    }
    out
}
