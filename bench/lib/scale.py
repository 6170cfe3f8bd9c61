"""The scale phase (`bench/run --scale N`): one broker under the limits deploy/broker.toml ships,
N tunnels from N real OpenSSH sessions of N/20 owners (20 each: within max_forwards_per_user and
max_claims_per_hour), then

- RSS per idle tunnel and CPU while idle;
- idle visitor connections (one request each, then held open with keep-alive) spread over 100
  of the tunnels: RSS per connection;
- a reconnect storm: the broker is killed (-9) and started again on its data, every owner
  reconnects at once through a reconnect loop (1-2 s between tries, as autossh or a shell loop
  with a sleep would), and the time until all N tunnels are live again (the broker's own
  `warren_tunnels_live`) and a sample answers through the edge.
"""
import os
import random
import re
import socket
import subprocess
import time
import tomllib
import urllib.request

import measure
import systems
from systems import http_ok, log, raise_nofile, ssh_tunnel, wait_until, free_port

PER_OWNER = 20
# Keys of deploy/broker.toml that are limits or timers, not addresses, names or providers.
LIMIT_PREFIXES = ("max_", "ssh_", "visitor_", "keepalive_", "header_timeout", "grace_secs",
                  "request_log_entries", "origin_timeout", "limit_exempt", "auto_claim")


def deployed_limits(repo, path):
    """A config file holding only the limits of deploy/broker.toml, verbatim."""
    with open(os.path.join(repo, "deploy", "broker.toml"), "rb") as f:
        deployed = tomllib.load(f)
    keep = {k: v for k, v in deployed.items() if k.startswith(LIMIT_PREFIXES) and not k.endswith("_addr")}
    with open(path, "w") as f:
        for k, v in sorted(keep.items()):
            if isinstance(v, bool):
                f.write(f"{k} = {'true' if v else 'false'}\n")
            elif isinstance(v, (int, float)):
                f.write(f"{k} = {v}\n")
            elif isinstance(v, list):
                f.write(f"{k} = [{', '.join(repr(x) for x in v)}]\n")
            else:
                f.write(f'{k} = "{v}"\n')
    return keep


class Broker:
    """A broker on a data directory that outlives it (killed and started again)."""

    def __init__(self, procs, tmp, binary, config, database_url=None, node=None):
        self.procs, self.binary, self.config = procs, binary, config
        self.data = os.path.join(tmp, "broker")
        self.env = dict(os.environ, BROKER_DATA_DIR=self.data, BROKER_LOG="warn", BROKER_CONFIG=config)
        self.env.pop("BROKER_DATABASE_URL", None)
        if database_url:
            self.env["BROKER_DATABASE_URL"] = database_url
        self.node = node
        self.ports = {"ssh": free_port(), "http": free_port(), "https": free_port(), "admin": free_port()}
        self.proc = None
        # Warnings and errors of every start, read after the storm to say why owners retried.
        self.log_path = os.path.join(tmp, f"broker-{node or 'solo'}.log")

    def cli(self, *args):
        subprocess.run([self.binary, *args], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start(self):
        p = self.ports
        self.proc = self.procs.start(
            [self.binary, "--ssh-addr", f"127.0.0.1:{p['ssh']}", "--http-addr", f"127.0.0.1:{p['http']}",
             "--https-addr", f"127.0.0.1:{p['https']}", "--admin-addr", f"127.0.0.1:{p['admin']}", "--public-scheme", "http",
             *(["--node-name", self.node, "--cluster-listen", "127.0.0.1:0"] if self.node else []),
             "serve"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
            preexec_fn=raise_nofile)
        def up():
            if self.proc.poll() is not None:
                raise measure.Failure(f"the broker exited with {self.proc.returncode} at start")
            return self.metric("warren_ssh_sessions_live") is not None
        end = time.time() + 60
        while True:
            try:
                if up():
                    break
            except OSError:
                pass
            if time.time() > end:
                raise measure.Failure("the broker did not listen within 60 s")
            time.sleep(0.05)
        return self.proc

    def metric(self, name):
        """The value of an unlabelled (or first-labelled) metric line named `name`, or None."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def counters(self, *names):
        """Every line of the named metrics, `name{labels}` -> value (non-zero ones)."""
        out = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(names):
                    key, value = line.rsplit(" ", 1)
                    if float(value):
                        out[key] = float(value)
        return out

    def warnings_since(self, offset):
        """Warning and error lines of the log past `offset`, counted by their message."""
        counts = {}
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            for raw in f:
                line = raw.decode(errors="replace")
                if " WARN " not in line and " ERROR " not in line:
                    continue
                # `... WARN target: message key=value ...`: the message is what says why; its
                # fields (which name, how long) would make every line its own.
                msg = line.split(": ", 1)[-1].strip()
                msg = re.sub(r"\s+[\w.]+=\S+", "", msg)[:120]
                counts[msg] = counts.get(msg, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:12])

    def live_tunnels(self):
        return self.metric('warren_tunnels_live{kind="http"}') or 0


def owners(broker, tmp, n):
    """N/20 users, each with its own ed25519 key; the key of tunnel i."""
    keys = []
    t0 = time.time()
    for j in range((n + PER_OWNER - 1) // PER_OWNER):
        key = os.path.join(tmp, f"id_{j}")
        subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", key], check=True)
        broker.cli("user", "add", f"o{j}")
        broker.cli("key", "add", f"o{j}", key + ".pub")
        keys.append(key)
    log(f"  {len(keys)} owners and keys made in {time.time() - t0:.0f} s")
    return lambda i: keys[i // PER_OWNER]


def idle_visitors(pid, http_port, hosts, m, idle_s):
    """RSS per visitor connection: `m` keep-alive connections, one 1 KiB GET each, then held
    idle. All are opened and asked at once and their answers read as they come (selectors), so
    the last is open seconds after the first: within `header_timeout_secs` (20 s deployed), after
    which the broker closes a keep-alive connection that sent nothing more."""
    import selectors
    raise_nofile()
    rss0, _ = measure.proc_status(pid)
    socks, pending = [], {}
    sel = selectors.DefaultSelector()
    t0 = time.time()
    try:
        for i in range(m):
            s = socket.create_connection(("127.0.0.1", http_port), timeout=30)
            s.sendall(f"GET /1k.bin HTTP/1.1\r\nHost: {hosts[i % len(hosts)]}\r\n\r\n".encode())
            s.setblocking(False)
            socks.append(s)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
            # A batch at a time: thousands of heads not yet read would be a flood to the
            # broker (past 3/4 of max_pending_visitor_connections it gives newcomers 3 s
            # instead of header_timeout_secs, and would close them while they idle here).
            if len(pending) >= VISITOR_BATCH:
                answered(sel, pending, m)
        answered(sel, pending, m)
        up_s = time.time() - t0
        rss1, cpu1 = measure.proc_status(pid)
        time.sleep(idle_s)  # the measurement: memory and CPU while they sit idle
        rss2, cpu2 = measure.proc_status(pid)
        open_still = 0
        for s in socks:
            try:
                s.recv(1, socket.MSG_PEEK)  # b"": closed by the broker; bytes: unasked for
            except BlockingIOError:
                open_still += 1  # nothing to read and not closed: still held
            except OSError:
                pass
    finally:
        sel.close()
        for s in socks:
            s.close()
    if open_still != m:
        raise measure.Failure(f"{m - open_still} of {m} idle visitor connections were closed while idle")
    return {"connections": m, "tunnels": len(hosts), "open_s": round(up_s, 1), "rss_kib_before": rss0,
            "rss_kib_answered": rss1, "rss_kib_idle": rss2,
            "rss_kib_per_connection": round((rss2 - rss0) / m, 2),
            "cpu_ms_per_idle_connection_per_s": round((cpu2 - cpu1) * 1000 / idle_s / m, 5)}


VISITOR_BATCH = 1000


def answered(sel, pending, m):
    """Reads the responses of every connection in `pending` (a 1 KiB body each)."""
    end = time.time() + 60
    while pending:
        if time.time() > end:
            raise measure.Failure(f"{len(pending)} of {m} visitor requests unanswered after 60 s")
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            chunk = s.recv(65536)
            if not chunk:
                raise measure.Failure("a visitor connection closed before its response")
            got = pending[s] + chunk
            head, sep, body = got.partition(b"\r\n\r\n")
            if len(head) > 12 and not head.startswith(b"HTTP/1.1 200"):
                first = head.split(b"\r\n", 1)[0]
                raise measure.Failure(f"visitor connection: {first!r}")
            if sep and len(body) >= 1024:
                del pending[s]
                sel.unregister(s)
            else:
                pending[s] = got


def storm(procs, broker, key_of, origin, n, clients):
    """Kill -9, start again, every owner reconnecting at once; seconds until all are back."""
    broker.proc.kill()
    broker.proc.wait()
    for c in clients:
        c.wait()
    t_down = time.time()
    log_from = os.path.getsize(broker.log_path)
    broker.start()
    t0 = time.time()
    log(f"  broker back in {t0 - t_down:.1f} s; {n} owners reconnect at once")
    spec = lambda i: f"h{i}:80"
    live = [ssh_tunnel(procs, broker.ports["ssh"], key_of(i), origin, spec(i)) for i in range(n)]
    spawned_s = time.time() - t0
    retry_at = {}
    retries = 0
    end = t0 + max(300, n / 10)
    while True:
        back = broker.live_tunnels()
        if back >= n:
            break
        if time.time() > end:
            raise measure.Failure(f"only {back:.0f} of {n} tunnels back {end - t0:.0f} s after the restart")
        now = time.time()
        for i, c in enumerate(live):
            if c.poll() is None:
                continue
            # The loop of a real owner: wait 1-2 s, then try again.
            at = retry_at.setdefault(i, now + 1 + random.random())
            if now >= at:
                del retry_at[i]
                live[i] = ssh_tunnel(procs, broker.ports["ssh"], key_of(i), origin, spec(i))
                retries += 1
        time.sleep(0.2)
    all_back_s = time.time() - t0
    for i in random.sample(range(n), min(n, 100)):
        wait_until(f"tunnel {i} answers after the storm", lambda: http_ok(broker.ports["http"], f"h{i}.localhost"),
                   timeout=60)
    # Why owners had to retry: connections the broker refused or timed out (limit hits), and
    # what it warned about (a forward refused because the store did not answer, ...).
    why = {"counters": broker.counters("warren_limit_hits_total", "warren_ssh_connections_total",
                                       "warren_ssh_logins_total", "warren_ssh_auth_failures_total",
                                       "warren_ssh_forwards_refused_total"),
           "warnings": broker.warnings_since(log_from)}
    log(f"  storm: why owners retried: {why}")
    return live, {"owners": n, "spawn_s": round(spawned_s, 1), "all_back_s": round(all_back_s, 1),
                  "retries": retries, "sessions_per_s": round(n / all_back_s, 1), "why": why}


def run(procs, tmp, repo, binary, origin, n, visitors, idle_s=10):
    config = os.path.join(tmp, "limits.toml")
    limits = deployed_limits(repo, config)
    log(f"scale: {n} tunnels under deploy/broker.toml's limits {sorted(limits)}")
    broker = Broker(procs, tmp, binary, config)
    broker.cli("migrate")
    key_of = owners(broker, tmp, n)
    broker.start()
    result = {"limits": limits}
    spec = lambda i: f"h{i}:80"
    held, clients = measure.idle_tunnels(
        procs, broker.proc.pid, broker.ports["ssh"], key_of, origin, n, spec,
        probe=measure.named_probe(broker.ports["http"], "localhost", "h"), idle_s=idle_s, keep=True)
    result["hold"] = held
    log(f"  held: {held}")
    clients, result["storm"] = storm(procs, broker, key_of, origin, n, clients)
    log(f"  storm: {result['storm']}")
    time.sleep(idle_s)  # settle: what the storm left behind in RSS
    rss, _ = measure.proc_status(broker.proc.pid)
    result["storm"]["rss_kib_after"] = rss
    # Idle visitors over the first 100 tunnels, the others closed first: 10,000 tunnels and
    # 10,000 visitors at once take more descriptors than a process may have here (20,000).
    keep = min(n, SPREAD_OVER)
    for c in clients[keep:]:
        c.terminate()
    for c in clients[keep:]:
        c.wait()
    wait_until(f"{keep} tunnels left", lambda: broker.live_tunnels() <= keep, timeout=120)
    time.sleep(idle_s + 2)  # past a malloc_trim: what the storm's sessions left is given back
    hosts = [f"h{i}.localhost" for i in range(keep)]
    # Held idle for 5 s: well within the deployed header_timeout_secs (20 s), past which the
    # broker closes a keep-alive connection that asks nothing more.
    result["visitors"] = idle_visitors(broker.proc.pid, broker.ports["http"], hosts, visitors, 5)
    log(f"  idle visitors: {result['visitors']}")
    for c in clients[:keep]:
        c.terminate()
    for c in clients[:keep]:
        c.wait()
    broker.proc.terminate()
    broker.proc.wait()
    return result


SPREAD_OVER = 100


def pg_transactions(url):
    """Transactions the database has counted (Postgres statistics): what the nodes asked of it."""
    name = url.rsplit("/", 1)[1]
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-tAc",
                          "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"],
                         check=True, capture_output=True, text=True, timeout=20)
    return int(out.stdout.strip())


def cluster(procs, tmp, repo, binary, origin, n, nodes, idle_s=10):
    """`--scale --nodes K`: n tunnels spread over K nodes on one Postgres (tunnel i on node i mod
    K, its probes through the next node: the cross-node hop), under the deployed limits. Per
    node: RSS per tunnel it holds; the claim rate while they came up; and what the nodes ask of
    Postgres at rest (transactions per second over `idle_s`, and per 1,000 tunnels)."""
    url = systems.postgres_database(tmp)
    if not url:
        raise measure.Failure("--nodes needs Postgres on 127.0.0.1:5432")
    try:
        config = os.path.join(tmp, "limits.toml")
        limits = deployed_limits(repo, config)
        brokers = [Broker(procs, os.path.join(tmp, f"n{j}"), binary, config, url, f"n{j}") for j in range(nodes)]
        brokers[0].cli("migrate")
        key_of = owners(brokers[0], tmp, n)
        for b in brokers:
            b.start()
        log(f"cluster: {n} tunnels over {nodes} nodes")
        rss0 = [measure.proc_status(b.proc.pid)[0] for b in brokers]
        clients = []
        t0 = time.time()
        for i in range(n):
            b = brokers[i % nodes]
            clients.append(ssh_tunnel(procs, b.ports["ssh"], key_of(i), origin, f"h{i}:80"))
            if i % 50 == 49:
                time.sleep(0.2)
                dead = [c for c in clients[-50:] if c.poll() is not None]
                if dead:
                    raise measure.Failure(f"{len(dead)} ssh clients exited while connecting (tunnel {i + 1} of {n})")
                j = i - measure.IN_FLIGHT
                if j >= 0:
                    via = brokers[(j + 1) % nodes].ports["http"]
                    wait_until(f"tunnel {j} answers through another node",
                               lambda: http_ok(via, f"h{j}.localhost"), timeout=120)
        end = time.time() + max(300, n / 10)
        while sum(b.live_tunnels() for b in brokers) < n:
            dead = sum(1 for c in clients if c.poll() is not None)
            if dead:
                raise measure.Failure(f"{dead} of {n} ssh clients exited before all tunnels were up")
            if time.time() > end:
                raise measure.Failure(f"only {sum(b.live_tunnels() for b in brokers):.0f} of {n} tunnels up")
            time.sleep(0.5)
        up_s = time.time() - t0
        for i in random.sample(range(n), min(n, 50)):
            via = brokers[(i + 1) % nodes].ports["http"]
            wait_until(f"tunnel {i} answers on another node", lambda: http_ok(via, f"h{i}.localhost"), timeout=60)
        # Each node tails the audit log, and just after a storm of claims it is thousands of
        # rows behind (each bind is an event every node reacts to): transactions per second
        # in consecutive windows, until two in a row agree; the last is the figure at rest.
        windows = []
        x0 = pg_transactions(url)
        for _ in range(12):
            time.sleep(idle_s)
            x1 = pg_transactions(url)
            windows.append(round((x1 - x0) / idle_s, 1))
            x0 = x1
            if len(windows) >= 3 and abs(windows[-1] - windows[-2]) <= max(2.0, 0.1 * windows[-2]):
                break
        rss2 = [measure.proc_status(b.proc.pid)[0] for b in brokers]
        held = [b.live_tunnels() for b in brokers]
        per_s = windows[-1]
        result = {
            "limits": limits, "tunnels": n, "nodes": nodes, "connect_s": round(up_s, 1),
            "claims_per_s": round(n / up_s, 1),
            "per_node": [{"node": b.node, "tunnels": int(h), "rss_kib_before": r0, "rss_kib_idle": r2,
                          "rss_kib_per_tunnel": round((r2 - r0) / max(h, 1), 1)}
                         for b, h, r0, r2 in zip(brokers, held, rss0, rss2)],
            "pg_transactions_per_s_windows": windows,
            "pg_transactions_per_s_at_rest": round(per_s, 2),
            "pg_transactions_per_s_per_1000_tunnels": round(per_s / (n / 1000), 3),
        }
        for c in clients:
            c.terminate()
        for c in clients:
            c.wait()
        for b in brokers:
            b.proc.terminate()
            b.proc.wait()
        return result
    finally:
        systems.drop_postgres_database(url)
