//! `headroom purge`: asks a running headroom's admin API to purge its cache (and, through
//! a shared Redis tier, every instance's).

use clap::Args as ClapArgs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

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
    match post(&args.admin, args.token.as_deref(), &body) {
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

fn post(addr: &str, token: Option<&str>, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "POST /cache/purge HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let text = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, text))
}
