"""Measurements: wrk load (keep-alive and cold), bulk download and upload with curl, CPU per
process, and the broker's memory with many idle tunnels from real OpenSSH clients."""
import os
import random
import re
import subprocess
import time

from systems import http_ok, log, ssh_tunnel, wait_until


class Failure(Exception):
    """A path answered something other than what the bench asked for (the smoke run fails on it)."""


def url(port, host, path, tls):
    # wrk resolves with getaddrinfo, which knows `localhost` but not `*.localhost`: TLS goes to
    # https://localhost (that SNI) and every request names the tunnel in its Host header.
    return f"https://localhost:{port}{path}" if tls else f"http://127.0.0.1:{port}{path}"


def wrk(port, host, seconds, tls=False, cold=False, headers=(), script=None):
    """Keep-alive load on 64 connections, or with `cold` a new TCP (and TLS) connection per request;
    `headers` are sent with every request (a basic-auth row's Authorization); `script` is a wrk Lua
    script that shapes each request (the spread row's rotating Host)."""
    extra = ["-H", "Connection: close"] if cold else []
    for h in headers:
        extra += ["-H", h]
    if script:
        extra += ["-s", script]
    out = subprocess.run(["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", "-H", f"Host: {host}", *extra,
                          url(port, host, "/1k.bin", tls)], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if non2xx or errors:
        log(f"wrk via {host}: {non2xx.group(0) if non2xx else ''} {errors.group(0) if errors else ''}")
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99), "non2xx": int(non2xx.group(1)) if non2xx else 0}


def curl_target(port, host, path, tls, headers=()):
    """curl's arguments for `path` on `host`. Over TLS, curl connects to 127.0.0.1 but sends the
    tunnel's name as SNI, as a browser does (wrk cannot, see `url`), and speaks HTTP/1.1 on every
    path: curl 7.88's HTTP/2 upload costs curl itself ~2.5 CPU-s/GiB (8 KiB writes, each with a
    poll and two sigactions) against ~0.6 over HTTP/1.1, and only the fronts that offer h2 would
    pay it."""
    extra = [a for h in headers for a in ("-H", h)]
    if tls:
        return [*extra, "--http1.1", "--resolve", f"{host}:{port}:127.0.0.1", f"https://{host}:{port}{path}"]
    return [*extra, "-H", f"Host: {host}", url(port, host, path, tls)]


def curl(args, what):
    out = subprocess.run(["curl", "-s", "-k", "-w", "%{http_code} %{speed_download} %{size_download} "
                          "%{speed_upload} %{size_upload}", *args], capture_output=True, text=True).stdout.split()
    if len(out) != 5 or out[0] != "200":
        raise Failure(f"{what}: curl got {out}")
    _, down, down_n, up, up_n = out
    return float(down), int(down_n), float(up), int(up_n)


def bulk(port, host, size, tls=False, headers=()):
    """One download of the origin's bulk file."""
    down, n, _, _ = curl(["-o", "/dev/null", *curl_target(port, host, "/bulk.bin", tls, headers)],
                         f"download via {host}")
    if n != size:
        raise Failure(f"download via {host}: {n} bytes of {size}")
    return {"mb_s": down / 1e6}


def upload(port, host, path, size, tls=False, headers=()):
    """One upload of `path` (PUT) to the origin's sink, which answers only once it has read it all."""
    out_file = os.path.join(os.path.dirname(path), f"upload-{os.getpid()}.txt")
    _, _, up, n = curl(["-o", out_file, "-T", path, *curl_target(port, host, "/upload", tls, headers)],
                       f"upload via {host}")
    with open(out_file) as f:
        answer = f.read().strip()
    if n != size or answer != f"received {size}":
        raise Failure(f"upload via {host}: sent {n} of {size}, origin said {answer!r}")
    return {"mb_s": up / 1e6}


def proc_status(pid):
    """(RSS KiB, CPU seconds) of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def established(port):
    """Established TCP connections to 127.0.0.1:port (server side)."""
    target = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f if line.split()[1] == target and line.split()[3] == "01")


def tree(pid):
    """`pid` and all its descendants (sshd's per-session children, nginx's workers)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0.0
    for pid in pids:
        try:
            total += proc_status(pid)[1]
        except OSError:
            pass  # exited meanwhile
    return total


def box_cpu_seconds():
    """CPU-seconds the whole machine has been busy, every core together (user, nice, system, irq,
    softirq; idle, iowait and the hypervisor's steal left out)."""
    with open("/proc/stat") as f:
        t = [int(x) for x in f.readline().split()[1:]]
    return (t[0] + t[1] + t[2] + t[5] + t[6]) / os.sysconf("SC_CLK_TCK")


def cpu_during(groups, fn):
    """Runs fn(); returns its result and each named process tree's CPU use meanwhile, in % of one core
    (100 = a saturated core), and with any group, `box`: the whole machine's (the load generator,
    the origin and everything else too; 200 = both cores of this box saturated). Where the box is
    saturated, a row's throughput against another's is the inverse of their box CPU per unit."""
    pids = {name: tree(pid) for name, pid in groups.items()}
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    box = box_cpu_seconds()
    t0 = time.time()
    out = fn()
    dt = time.time() - t0
    used = {name: round((cpu_seconds(p) - before[name]) * 100 / dt, 1) for name, p in pids.items()}
    if groups:
        used["box"] = round((box_cpu_seconds() - box) * 100 / dt, 1)
    return out, used


IN_FLIGHT = 200


def idle_tunnels(procs, server_pid, ssh_port, key, origin, n, spec, probe=None, idle_s=10, keep=False):
    """Server RSS and CPU per idle tunnel with `n` real OpenSSH clients connected, each with its own
    `-R spec(i)` and `key` (a path, or a function of i). `probe(i)` (optional) must answer for a
    sample of the tunnels once all are up. With `keep`, returns the clients too, still connected."""
    rss0, _ = proc_status(server_pid)
    clients = []
    key_of = key if callable(key) else (lambda i: key)
    t0 = time.time()
    for i in range(n):
        clients.append(ssh_tunnel(procs, ssh_port, key_of(i), origin, spec(i)))
        if i % 50 == 49:
            time.sleep(0.2)  # pace the key exchanges a little; not a synchronisation
            dead = [c for c in clients[-50:] if c.poll() is not None]
            if dead:
                raise Failure(f"{len(dead)} ssh clients exited while connecting (tunnel {i + 1} of {n})")
            if probe and i >= IN_FLIGHT:
                # At most ~IN_FLIGHT sessions connecting at once: this measures tunnels held, not
                # a reconnect storm (whose rate the server's per-session database writes bound).
                wait_until(f"tunnel {i - IN_FLIGHT} answers", lambda: probe(i - IN_FLIGHT), timeout=120)
    def all_up():
        dead = sum(1 for c in clients if c.poll() is not None)
        if dead:
            raise Failure(f"{dead} of {n} ssh clients exited before all tunnels were up")
        return established(ssh_port) >= n

    end = time.time() + max(120, n / 20)
    while not all_up():
        if time.time() > end:
            raise Failure(f"only {established(ssh_port)} of {n} tunnels connected")
        time.sleep(0.5)
    up_s = time.time() - t0
    if probe:
        for i in random.sample(range(n), min(n, 20)):
            wait_until(f"tunnel {i} answers", lambda: probe(i), timeout=60)
    rss1, cpu1 = proc_status(server_pid)
    time.sleep(idle_s)  # the measurement itself: CPU spent over `idle_s` idle seconds
    rss2, cpu2 = proc_status(server_pid)
    alive = sum(1 for c in clients if c.poll() is None)
    if not keep or alive != n:
        for c in clients:
            c.terminate()
        for c in clients:
            c.wait()
    if alive != n:
        raise Failure(f"{n - alive} of {n} ssh clients exited while idle")
    result = {"tunnels": n, "connect_s": round(up_s, 1), "rss_kib_before": rss0, "rss_kib_idle": rss2,
              "rss_kib_per_tunnel": round((rss2 - rss0) / n, 1),
              "cpu_ms_per_idle_tunnel_per_s": round((cpu2 - cpu1) * 1000 / idle_s / n, 4)}
    return (result, clients) if keep else result


def named_probe(http_port, domain, prefix):
    """A probe for idle_tunnels: the tunnel named PREFIX{i} answers through the edge."""
    return lambda i: http_ok(http_port, f"{prefix}{i}.{domain}")
