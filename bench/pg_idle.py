#!/usr/bin/env python3
"""bench/pg_idle.py — hold N idle, logged-in PostgreSQL client connections (stdlib only).

Each connection sends the startup message, authenticates (SCRAM-SHA-256, or MD5 / cleartext
if the server asks for those), waits for ReadyForQuery and then sends nothing more. When all
N are ready it prints "ready N" on stdout and holds them until SIGTERM / SIGINT or stdin
closes (with --stdin). bench/sql.sh uses it to measure a proxy's memory per idle client.

  python3 bench/pg_idle.py --port 6432 -n 500 [--host 127.0.0.1 --user app --password app --db app]
"""
import argparse, base64, hashlib, hmac, os, resource, signal, socket, struct, sys, time

_salted = {}  # (salt, iterations) -> SaltedPassword: one PBKDF2 per distinct salt, not per connection


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


def recv_msg(s):
    head = recv_exact(s, 5)
    typ, length = head[:1], struct.unpack("!I", head[1:])[0]
    return typ, recv_exact(s, length - 4)


def send_msg(s, typ, body):
    s.sendall(typ + struct.pack("!I", len(body) + 4) + body)


def error_text(body):
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in body.split(b"\0") if f)
    return "%s: %s" % (fields.get(b"S", "ERROR"), fields.get(b"M", "?"))


def login(host, port, user, password, db, timeout):
    s = socket.create_connection((host, port), timeout=timeout)
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
    pw = password.encode()
    nonce = client_first_bare = auth_message = salted = None
    while True:
        typ, body = recv_msg(s)
        if typ == b"E":
            raise RuntimeError(error_text(body))
        if typ == b"Z":  # ReadyForQuery: logged in, idle
            s.settimeout(None)
            return s
        if typ != b"R":
            continue  # ParameterStatus, BackendKeyData, NoticeResponse
        code = struct.unpack("!I", body[:4])[0]
        if code == 0:  # AuthenticationOk
            continue
        if code == 3:  # cleartext
            send_msg(s, b"p", pw + b"\0")
        elif code == 5:  # MD5
            inner = hashlib.md5(pw + user.encode()).hexdigest().encode()
            send_msg(s, b"p", b"md5" + hashlib.md5(inner + body[4:8]).hexdigest().encode() + b"\0")
        elif code == 10:  # SASL: mechanisms offered
            mechs = body[4:].split(b"\0")
            if b"SCRAM-SHA-256" not in mechs:
                raise RuntimeError("no SCRAM-SHA-256 among %r" % mechs)
            nonce = base64.b64encode(os.urandom(18)).decode()
            client_first_bare = "n=,r=" + nonce
            first = ("n,," + client_first_bare).encode()
            send_msg(s, b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
        elif code == 11:  # SASLContinue: server-first-message
            server_first = body[4:].decode()
            attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
            if not attrs["r"].startswith(nonce):
                raise RuntimeError("server nonce does not extend ours")
            key = (attrs["s"], int(attrs["i"]))
            salted = _salted.get(key)
            if salted is None:
                salted = _salted[key] = hashlib.pbkdf2_hmac("sha256", pw, base64.b64decode(attrs["s"]), int(attrs["i"]))
            client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
            stored_key = hashlib.sha256(client_key).digest()
            final_bare = "c=biws,r=" + attrs["r"]
            auth_message = ",".join((client_first_bare, server_first, final_bare)).encode()
            signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            send_msg(s, b"p", (final_bare + ",p=" + base64.b64encode(proof).decode()).encode())
        elif code == 12:  # SASLFinal: check the server's signature
            server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
            expect = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode()
            got = dict(kv.split("=", 1) for kv in body[4:].decode().split(",")).get("v")
            if got != expect:
                raise RuntimeError("bad server signature in SCRAM final message")
        else:
            raise RuntimeError("unsupported authentication request %d" % code)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", default="app")
    ap.add_argument("--password", default="app")
    ap.add_argument("--db", default="app")
    ap.add_argument("-n", type=int, default=500, help="connections (default 500)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-connection login timeout, seconds")
    ap.add_argument("--stdin", action="store_true", help="also stop when stdin reaches EOF")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.n + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))

    conns, t0 = [], time.monotonic()

    def on_signal(*_):  # the kernel closes the sockets
        raise SystemExit(0 if len(conns) == a.n else 1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(a.n):
        try:
            conns.append(login(a.host, a.port, a.user, a.password, a.db, a.timeout))
        except Exception as e:  # noqa: BLE001 — report which one and why, then give up
            print("error: connection %d of %d: %s" % (i + 1, a.n, e), flush=True)
            return 1
    print("ready %d (%.2fs)" % (len(conns), time.monotonic() - t0), flush=True)
    if a.stdin:
        while sys.stdin.buffer.read(4096):
            pass
    else:
        while True:
            time.sleep(3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
