//! Named prepared statements in transaction mode, as PgBouncer ≥ 1.21 and PgDog do them.
//!
//! A client's statement lives on whichever server connection ran the `Parse`, but its next
//! transaction may run on another. So headroom keeps each client's statements (name →
//! the `Parse` it sent) and gives every distinct statement one server-side name, `hr_` and a
//! hash of its text and parameter types, shared by every client that prepares the same SQL.
//! Each server connection remembers which of those it has. Then:
//! - `Parse` of a statement the server has is not sent: the client gets its `ParseComplete`
//!   from headroom; otherwise it is sent under the server-side name;
//! - `Bind` and `Describe` name the server-side statement, and a `Parse` is slipped in before
//!   them when this server does not have it yet (its `ParseComplete` is kept from the client);
//! - `Close` of a statement forgets the client's name and is answered by headroom (the
//!   server keeps the statement for the next client that prepares the same SQL).
//!
//! Because headroom answers some messages itself and hides some answers, it keeps, per
//! server connection in use, the queue of answers the client is owed ([`Expects`]), in
//! order, and walks the server's messages through it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// One statement as the servers know it.
#[derive(Debug)]
pub struct Stmt {
    pub hash: u64,
    /// The whole `Parse` message, under the server-side name.
    pub parse: Vec<u8>,
}

/// A client's named statements.
#[derive(Debug, Default)]
pub struct Statements {
    by_name: HashMap<Vec<u8>, Arc<Stmt>>,
}

/// What headroom owes the client, in the order the client's messages asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The server's answers pass until one of these completes it.
    Until(Done),
    /// A `Parse` sent under a server-side name: passes until `ParseComplete`; if it fails, the
    /// server does not have the statement after all.
    Parsed(u64),
    /// A `Parse` headroom slipped in: its `ParseComplete` is kept from the client.
    Hidden(u64),
    /// An answer headroom gives itself, when its turn comes: `ParseComplete` ('1') or
    /// `CloseComplete` ('3').
    Answer(u8),
}

/// Which server messages complete an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// `Query`, `Sync`, `FunctionCall`: `ReadyForQuery`.
    Ready,
    /// `Parse` '1', `Bind` '2', `Close` '3' (or an error).
    Tag(u8),
    /// `Describe`: `RowDescription` or `NoData` (after a `ParameterDescription`), or an error.
    Described,
    /// `Execute`: `CommandComplete`, `EmptyQueryResponse`, `PortalSuspended`, or an error.
    Executed,
}

/// The queue of answers owed, for one server connection in use.
#[derive(Debug, Default)]
pub struct Expects {
    q: VecDeque<Expect>,
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Keep it from the client (the `ParseComplete` of a slipped-in `Parse`).
    Hide,
}

/// The server-side name of a statement: `hr_` and 16 hex digits of a hash of the `Parse`
/// body after its name (the SQL, then the parameter types).
fn server_name(rest: &[u8]) -> (u64, String) {
    // SipHash with fixed keys: the same name for the same statement on every connection
    // and every headroom (fleets share servers).
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    rest.hash(&mut h);
    let hash = h.finish();
    (hash, format!("hr_{hash:016x}"))
}

fn message(tag: u8, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = vec![tag, 0, 0, 0, 0];
    body(&mut v);
    let len = (v.len() - 1) as u32;
    v[1..5].copy_from_slice(&len.to_be_bytes());
    v
}

/// Splits a NUL-terminated name off the front.
fn name(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

impl Statements {
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Takes one whole client message (`tag`, `body`) bound for a server that has the
/// statements `server_has`. Returns `None` when it goes as it is (after recording what it is
/// owed), or the bytes to send instead (possibly none). Answers headroom gives itself at
/// once are appended to `to_client` when nothing is owed before them.
pub fn client_message(
    tag: u8,
    body: &[u8],
    stmts: &mut Statements,
    server_has: &mut HashSet<u64>,
    expects: &mut Expects,
) -> Option<Vec<u8>> {
    match tag {
        b'Q' | b'S' | b'F' => {
            expects.push(Expect::Until(Done::Ready));
            None
        }
        b'P' => {
            let (stmt, rest) = name(body)?;
            if stmt.is_empty() {
                expects.push(Expect::Until(Done::Tag(b'1')));
                return None;
            }
            let (hash, sname) = server_name(rest);
            let parse = message(b'P', |v| {
                v.extend_from_slice(sname.as_bytes());
                v.push(0);
                v.extend_from_slice(rest);
            });
            stmts
                .by_name
                .insert(stmt.to_vec(), Arc::new(Stmt { hash, parse }));
            if server_has.contains(&hash) {
                expects.push(Expect::Answer(b'1'));
                Some(Vec::new())
            } else {
                server_has.insert(hash);
                expects.push(Expect::Parsed(hash));
                Some(stmts.by_name[stmt].parse.clone())
            }
        }
        b'B' => {
            let (portal, rest) = name(body)?;
            let (stmt, rest) = name(rest)?;
            let Some(s) = (!stmt.is_empty())
                .then(|| stmts.by_name.get(stmt))
                .flatten()
            else {
                // The unnamed statement, or one the client never prepared (the server will
                // say it does not exist): as it is.
                expects.push(Expect::Until(Done::Tag(b'2')));
                return None;
            };
            let mut out = ensure(s, server_has, expects);
            out.extend(message(b'B', |v| {
                v.extend_from_slice(portal);
                v.push(0);
                v.extend_from_slice(&s.parse[5..5 + 19]);
                v.push(0);
                v.extend_from_slice(rest);
            }));
            expects.push(Expect::Until(Done::Tag(b'2')));
            Some(out)
        }
        b'D' | b'C' => {
            let (&kind, rest) = body.split_first()?;
            let (stmt, _) = name(rest)?;
            let done = if tag == b'D' {
                Done::Described
            } else {
                Done::Tag(b'3')
            };
            if kind != b'S' || stmt.is_empty() {
                expects.push(Expect::Until(done));
                return None;
            }
            if tag == b'C' {
                stmts.by_name.remove(stmt);
                expects.push(Expect::Answer(b'3'));
                return Some(Vec::new());
            }
            let Some(s) = stmts.by_name.get(stmt) else {
                expects.push(Expect::Until(done));
                return None;
            };
            let mut out = ensure(s, server_has, expects);
            out.extend(message(b'D', |v| {
                v.push(b'S');
                v.extend_from_slice(&s.parse[5..5 + 19]);
                v.push(0);
            }));
            expects.push(Expect::Until(done));
            Some(out)
        }
        b'E' => {
            expects.push(Expect::Until(Done::Executed));
            None
        }
        // Flush, CopyData/Done/Fail, Terminate: nothing owed of their own.
        _ => None,
    }
}

/// A `Parse` to slip in first when the server lacks the statement.
fn ensure(s: &Stmt, server_has: &mut HashSet<u64>, expects: &mut Expects) -> Vec<u8> {
    if server_has.insert(s.hash) {
        expects.push(Expect::Hidden(s.hash));
        s.parse.clone()
    } else {
        Vec::new()
    }
}

impl Expects {
    fn push(&mut self, e: Expect) {
        self.q.push_back(e);
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    pub fn clear(&mut self) {
        self.q.clear();
    }

    /// Headroom's own answers now due (those at the front): appended to `out`.
    pub fn due_answers(&mut self, out: &mut Vec<u8>) {
        while let Some(&Expect::Answer(tag)) = self.q.front() {
            self.q.pop_front();
            out.extend_from_slice(&[tag, 0, 0, 0, 4]);
        }
    }

    /// One server message's tag (`fatal`: an `ErrorResponse` the connection ends with is
    /// handled by the relay). Statements the server turned out not to have are removed from
    /// `server_has`.
    pub fn server_message(&mut self, tag: u8, server_has: &mut HashSet<u64>) -> Verdict {
        let Some(&front) = self.q.front() else {
            // Unasked: notices, parameter changes, notifications.
            return Verdict::Pass;
        };
        match (front, tag) {
            // NoticeResponse, ParameterStatus, NotificationResponse: any time, owed nothing.
            (_, b'N' | b'S' | b'A') => Verdict::Pass,
            (Expect::Until(Done::Ready), b'Z') => {
                self.q.pop_front();
                Verdict::Pass
            }
            (Expect::Until(Done::Ready), _) => Verdict::Pass,
            (_, b'E') => {
                // The batch fails here: the server skips everything up to its Sync. A
                // slipped-in Parse that fails is the client's error all the same (its Bind
                // would have failed on it).
                let failed = self.q.pop_front();
                if let Some(Expect::Hidden(h) | Expect::Parsed(h)) = failed {
                    server_has.remove(&h);
                }
                while let Some(&e) = self.q.front() {
                    if e == Expect::Until(Done::Ready) {
                        break;
                    }
                    if let Expect::Hidden(h) | Expect::Parsed(h) = e {
                        server_has.remove(&h);
                    }
                    self.q.pop_front();
                }
                Verdict::Pass
            }
            (Expect::Hidden(_), b'1') => {
                self.q.pop_front();
                Verdict::Hide
            }
            (Expect::Parsed(_), b'1') => {
                self.q.pop_front();
                Verdict::Pass
            }
            (Expect::Until(Done::Tag(t)), _) if t == tag => {
                self.q.pop_front();
                Verdict::Pass
            }
            (Expect::Until(Done::Described), b'T' | b'n') => {
                self.q.pop_front();
                Verdict::Pass
            }
            (Expect::Until(Done::Executed), b'C' | b'I' | b's') => {
                self.q.pop_front();
                Verdict::Pass
            }
            _ => Verdict::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut b = name.as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        b.extend_from_slice(&[0, 0, 0]);
        b
    }

    fn bind(stmt: &str) -> Vec<u8> {
        let mut b = vec![0];
        b.extend_from_slice(stmt.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        b
    }

    /// The client's Parse runs once per server; on a second server its Bind brings it along.
    #[test]
    fn a_statement_follows_its_client_to_another_server() {
        let mut stmts = Statements::default();
        let (mut a, mut b) = (HashSet::new(), HashSet::new());
        let mut ex = Expects::default();
        let sent =
            client_message(b'P', &parse("P_0", "SELECT 1"), &mut stmts, &mut a, &mut ex).unwrap();
        assert_eq!(sent[0], b'P');
        assert!(
            sent[5..].starts_with(b"hr_"),
            "renamed: {:?}",
            String::from_utf8_lossy(&sent)
        );
        assert!(client_message(b'S', &[], &mut stmts, &mut a, &mut ex).is_none());
        assert_eq!(ex.server_message(b'1', &mut a), Verdict::Pass);
        assert_eq!(ex.server_message(b'Z', &mut a), Verdict::Pass);
        assert!(ex.is_empty());

        // Next transaction, another server: Bind brings a hidden Parse.
        let sent = client_message(b'B', &bind("P_0"), &mut stmts, &mut b, &mut ex).unwrap();
        assert_eq!(sent[0], b'P');
        let bind_at = 1 + u32::from_be_bytes(sent[1..5].try_into().unwrap()) as usize;
        assert_eq!(sent[bind_at], b'B');
        assert!(sent[bind_at + 6..].starts_with(b"hr_"));
        client_message(b'E', &[0, 0, 0, 0, 0], &mut stmts, &mut b, &mut ex);
        client_message(b'S', &[], &mut stmts, &mut b, &mut ex);
        assert_eq!(ex.server_message(b'1', &mut b), Verdict::Hide);
        for t in [b'2', b'D', b'C', b'Z'] {
            assert_eq!(ex.server_message(t, &mut b), Verdict::Pass);
        }
        assert!(ex.is_empty());

        // Back on the first server, a second Parse of the same SQL is answered by headroom.
        let mut other = Statements::default();
        let sent =
            client_message(b'P', &parse("s1", "SELECT 1"), &mut other, &mut a, &mut ex).unwrap();
        assert!(sent.is_empty());
        let mut out = Vec::new();
        ex.due_answers(&mut out);
        assert_eq!(out, [b'1', 0, 0, 0, 4]);
    }

    /// After an error the server skips to Sync: what headroom would have answered for the
    /// skipped messages is dropped, and a Parse it skipped is not on that server.
    #[test]
    fn an_error_skips_owed_answers_to_the_sync() {
        let mut stmts = Statements::default();
        let mut srv = HashSet::new();
        let mut ex = Expects::default();
        client_message(b'B', &bind(""), &mut stmts, &mut srv, &mut ex);
        client_message(b'P', &parse("x", "SELECT 2"), &mut stmts, &mut srv, &mut ex);
        client_message(b'S', &[], &mut stmts, &mut srv, &mut ex);
        assert_eq!(srv.len(), 1);
        assert_eq!(ex.server_message(b'E', &mut srv), Verdict::Pass);
        assert!(srv.is_empty(), "the skipped Parse is not on the server");
        assert_eq!(ex.server_message(b'Z', &mut srv), Verdict::Pass);
        assert!(ex.is_empty());
    }

    #[test]
    fn close_of_a_statement_is_answered_here_and_keeps_it_on_the_server() {
        let mut stmts = Statements::default();
        let mut srv = HashSet::new();
        let mut ex = Expects::default();
        client_message(b'P', &parse("x", "SELECT 3"), &mut stmts, &mut srv, &mut ex);
        ex.server_message(b'1', &mut srv);
        let sent = client_message(b'C', b"Sx\0", &mut stmts, &mut srv, &mut ex).unwrap();
        assert!(sent.is_empty());
        assert!(stmts.is_empty());
        let mut out = Vec::new();
        ex.due_answers(&mut out);
        assert_eq!(out, [b'3', 0, 0, 0, 4]);
        assert_eq!(srv.len(), 1);
    }
}
