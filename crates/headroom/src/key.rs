//! `headroom key`: API keys for `[[consumer]]` tables. The config holds only a key's
//! SHA-256 (`keys = ["sha256:…"]`); the key itself goes to the client and nowhere else.

use clap::Subcommand;
use std::io::Read;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum Command {
    /// Make a new random key; print it and the line for the consumer's `keys`.
    #[command(
        after_help = "Example:\n  headroom key new\n  key:  hr_Zk3…   (give this to the client; it is not stored anywhere)\n  hash: sha256:4f1c…   (put this in [[consumer]] keys)"
    )]
    New,
    /// Print the `sha256:…` hash of an existing key (from the argument, or one line on stdin).
    #[command(
        after_help = "Examples:\n  headroom key hash 'my-existing-key'\n  printf %s \"$KEY\" | headroom key hash     # keeps the key out of shell history"
    )]
    Hash {
        /// The key; read from stdin when left out.
        key: Option<String>,
    },
}

pub fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::New => match headroom_guard::new_key() {
            Ok(key) => {
                println!("key:  {key}");
                println!("hash: {}", headroom_guard::key_hash(&key));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Hash { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                        eprintln!("error: cannot read the key from stdin: {e}");
                        return ExitCode::FAILURE;
                    }
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("error: the key is empty");
                return ExitCode::from(2);
            }
            println!("{}", headroom_guard::key_hash(&key));
            ExitCode::SUCCESS
        }
    }
}
