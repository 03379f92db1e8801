//! `headroom purge`: asks a running headroom's admin API to purge its cache (and, through
//! a shared Redis tier, every instance's).

use clap::Args as ClapArgs;
use std::process::ExitCode;

#[derive(Debug, ClapArgs)]
#[command(
    about = "Purge the cache: one URL (all its variants), a prefix, a tag, or everything",
    after_help = "Examples:\n  headroom purge https://example.com/products/42      # one URL, every variant\n  headroom purge --prefix /static/ --soft             # mark stale: still served while revalidating\n  headroom purge --tag product-42                     # Surrogate-Key / Cache-Tag\n  headroom purge --all\n\nWith a Redis tier ([cache.redis]), every instance sharing it applies the purge within a second."
)]
pub struct Args {
    /// The URL to purge: `https://host/path?query`, `host/path` or `/path` (any host).
    #[arg(conflicts_with_all = ["prefix", "tag", "all"], required_unless_present_any = ["prefix", "tag", "all"])]
    url: Option<String>,
    /// Purge every URL under this path prefix (`/static/` or `host/static/`).
    #[arg(long)]
    prefix: Option<String>,
    /// Purge every response tagged so by its `Surrogate-Key` or `Cache-Tag` header.
    #[arg(long)]
    tag: Option<String>,
    /// Purge everything.
    #[arg(long)]
    all: bool,
    /// Mark stale instead of deleting: stale-while-revalidate and stale-if-error still apply.
    #[arg(long)]
    soft: bool,
    /// The admin listener.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: String,
    /// The admin token (`admin.token`), if set.
    #[arg(long, env = "HEADROOM_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub fn run(args: Args) -> ExitCode {
    let mut body = serde_json::Map::new();
    if let Some(u) = &args.url {
        body.insert("url".into(), u.clone().into());
    } else if let Some(p) = &args.prefix {
        body.insert("prefix".into(), p.clone().into());
    } else if let Some(t) = &args.tag {
        body.insert("tag".into(), t.clone().into());
    } else {
        body.insert("all".into(), true.into());
    }
    body.insert("soft".into(), args.soft.into());
    let body = serde_json::Value::Object(body).to_string();
    match crate::admin_client::request(
        &args.admin,
        args.token.as_deref(),
        "POST",
        "/cache/purge",
        Some(&body),
    ) {
        Ok((200, text)) => {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            println!(
                "purged {} stored response(s) here{}{}",
                v["purged"],
                if args.soft {
                    " (soft: marked stale)"
                } else {
                    ""
                },
                if v["shared"] == true {
                    "; every instance sharing the Redis tier applies it within a second"
                } else {
                    ""
                }
            );
            ExitCode::SUCCESS
        }
        Ok((status, text)) => {
            eprintln!(
                "headroom purge: the admin API answered {status}: {}",
                text.trim()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "headroom purge: cannot reach the admin API at {}: {e}",
                args.admin
            );
            ExitCode::FAILURE
        }
    }
}
