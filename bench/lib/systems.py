"""The systems under test, each started on 127.0.0.1 with free ports: the origin (nginx, plus an
upload sink behind it), OpenSSH sshd, the classic nginx front, the Warren broker and sandhole."""
import base64
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


_taken = 0


def free_port():
    """A port free a moment ago, for a server told its port before it binds it. Taken below the
    kernel's ephemeral range (10000-19999), so no bind(0) or outgoing connection can be handed it
    in between, and never twice in one run (as the tests' free_port)."""
    global _taken
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low < 20000:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    start = (os.getpid() * 7919) % 10000
    while _taken < 10000:
        port = 10000 + (start + _taken) % 10000
        _taken += 1
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port left in 10000-19999")


def wait_until(what, fn, timeout=30.0, interval=0.02):
    """Polls `fn` (an exception counts as "not yet") until it is true."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if fn():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(port, host, path="/1k.bin", headers=()):
    extra = dict(h.split(": ", 1) for h in headers)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host, **extra})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status == 200


class Procs:
    """Every process the bench starts, stopped in reverse order at the end."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def start_origin(procs, tmp, bulk_bytes):
    """nginx serving /1k.bin and /bulk.bin, and proxying /upload to a sink that reads the whole body."""
    www = os.path.join(tmp, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(www, "bulk.bin"), "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(bulk_bytes >> 20):
            f.write(chunk)
    sink = free_port()
    procs.start([sys.executable, os.path.join(HERE, "sink.py"), str(sink)])
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path {tmp}/b; proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f;
  uwsgi_temp_path {tmp}/u; scgi_temp_path {tmp}/s;
  upstream sink {{ server 127.0.0.1:{sink}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{port}; root {www};
    location = /upload {{
      client_max_body_size 0; proxy_request_buffering off; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_pass http://sink;
    }}
  }}
}}
""")
    procs.start(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    wait_until("nginx", lambda: http_ok(port, "origin"))
    return port


def self_signed(tmp):
    """One certificate for every TLS front and every name the bench sends as SNI (wrk and curl do not
    verify; what matters is the handshake cost)."""
    cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,DNS:*.localhost,DNS:*.sandhole.localhost,DNS:bench.example",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def start_sshd(procs, tmp, pubkey):
    """OpenSSH sshd on a free port, accepting our key, allowing -R, as people run it."""
    os.makedirs("/run/sshd", exist_ok=True)
    hostkey = os.path.join(tmp, "sshd_host_key")
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", hostkey], check=True)
    auth = os.path.join(tmp, "authorized_keys")
    shutil.copy(pubkey, auth)
    port = free_port()
    conf = os.path.join(tmp, "sshd_config")
    with open(conf, "w") as f:
        f.write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {hostkey}
PidFile {tmp}/sshd.pid
AuthorizedKeysFile {auth}
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
""")
    procs.start(["/usr/sbin/sshd", "-D", "-e", "-f", conf], stderr=subprocess.DEVNULL)
    wait_until("sshd", lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)
    return port


def start_classic_nginx(procs, tmp, fwd_port, cert, key):
    """nginx in front of the sshd -R port, with the location block people deploy (kept verbatim).
    `client_max_body_size 0` sits beside it, as anyone who lets users upload sets it."""
    plain, tls = free_port(), free_port()
    conf = os.path.join(tmp, "classic.conf")
    location = f"""
    location / {{
        proxy_pass http://localhost:{fwd_port};
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 86400;
    }}"""
    with open(conf, "w") as f:
        f.write(f"""
daemon off; worker_processes auto; pid {tmp}/classic.pid; error_log {tmp}/classic.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_max_body_size 0;
  client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/cp; fastcgi_temp_path {tmp}/cf;
  uwsgi_temp_path {tmp}/cu; scgi_temp_path {tmp}/cs;
  server {{ listen 127.0.0.1:{plain}; {location} }}
  server {{ listen 127.0.0.1:{tls} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; {location} }}
}}
""")
    procs.start(["nginx", "-c", conf, "-p", tmp], stderr=subprocess.DEVNULL)
    wait_until("classic nginx", lambda: http_ok(plain, "classic"))
    return plain, tls


# Where HAProxy connects from when it names visitors; the broker lists it in proxy_protocol_from.
PROXY_SOURCE = "127.0.0.2"


def start_haproxy(procs, tmp, http_port):
    """HAProxy in TCP mode in front of the broker's HTTP port, with two frontends: `plain`
    passes the bytes as they come, `proxy` starts each connection with a PROXY v2 header
    naming the visitor, from PROXY_SOURCE. Returns (process, plain port, proxy port), or None
    when haproxy is not installed."""
    if not shutil.which("haproxy"):
        return None
    plain, proxy = free_port(), free_port()
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend plain
    bind 127.0.0.1:{plain}
    default_backend plain
backend plain
    server b 127.0.0.1:{http_port}
frontend proxy
    bind 127.0.0.1:{proxy}
    default_backend proxy
backend proxy
    server b 127.0.0.1:{http_port} send-proxy-v2 source {PROXY_SOURCE}
""")
    p = procs.start(["haproxy", "-db", "-f", conf], stderr=subprocess.DEVNULL)
    wait_until("haproxy", lambda: http_ok(plain, "bench.localhost") and http_ok(proxy, "bench.localhost"))
    return p, plain, proxy


def start_broker(procs, tmp, binary, cert, cert_key, extra=(), wrap=(), database_url=None, owner=True):
    """A fresh Warren broker (embedded SQLite, or `database_url`) with one user `bench` and a
    new ed25519 key (`owner=False`: a further node on a database that has them); `extra` flags
    go to `serve`, which runs under `wrap` (a profiler's command line) if given."""
    data = os.path.join(tmp, "broker")
    env = dict(os.environ, BROKER_DATA_DIR=data, BROKER_LOG="warn")
    env.pop("BROKER_CONFIG", None)
    env.pop("BROKER_DATABASE_URL", None)
    if database_url:
        env["BROKER_DATABASE_URL"] = database_url
    key = os.path.join(tmp, "id_ed25519")
    if owner:
        # Admin commands never create a database; `migrate` does, on purpose.
        subprocess.run([binary, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([binary, "user", "add", "bench"], env=env, check=True, stdout=subprocess.DEVNULL)
        if not os.path.exists(key):
            subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-f", key], check=True)
        subprocess.run([binary, "key", "add", "bench", key + ".pub"], env=env, check=True, stdout=subprocess.DEVNULL)
    p = procs.start([*wrap, binary, "--ssh-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--admin-addr", "off",
                     "--tls-cert", cert, "--tls-key", cert_key, "--public-scheme", "http", "--https-redirect", "false",
                     *extra, "serve"], env=env, stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
    ports = {}
    for line in p.stdout:
        for name in ("ssh", "http", "https"):
            if line.startswith(f"  {name} "):
                ports[name] = int(line.split()[1].rsplit(":", 1)[1])
        if len(ports) == 3:
            break
    return p, ports, key


BASIC_USER, BASIC_PASSWORD = "bench", "bench-password-1"


def protect(binary, tmp, name):
    """Reserves `name` for the bench user and puts it behind basic auth (argon2id, the default);
    returns the request header that passes it."""
    env = dict(os.environ, BROKER_DATA_DIR=os.path.join(tmp, "broker"), BROKER_LOG="warn")
    env.pop("BROKER_CONFIG", None)
    env.pop("BROKER_DATABASE_URL", None)
    subprocess.run([binary, "reserve", "bench", name], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([binary, "rules", name, "auth", "add", BASIC_USER], env=env, check=True,
                   input=BASIC_PASSWORD + "\n", text=True, stdout=subprocess.DEVNULL)
    token = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    return f"Authorization: Basic {token}"


def postgres_database(procs_tmp):
    """A fresh database on the local Postgres (127.0.0.1:5432, user postgres), or None when
    there is none to reach: the cluster rows are then skipped."""
    name = f"warren_bench_{os.getpid()}_{int(time.time())}"
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                        f"CREATE DATABASE {name}"], check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        log(f"no Postgres on 127.0.0.1:5432 ({e}): the cluster rows are skipped")
        return None
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url):
    name = url.rsplit("/", 1)[1]
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                    f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True, timeout=20)


NOFILE = 65536


def raise_nofile():
    """Idle-tunnel runs hold thousands of sockets: lift the fd limit to NOFILE where allowed
    (root may raise the hard limit, as systemd's LimitNOFILE does), else the soft one to the hard."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(NOFILE, hard), max(NOFILE, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def sandhole_binary():
    """sandhole from `cargo install sandhole --root bench/.tools`, or None."""
    path = os.path.join(os.path.dirname(HERE), ".tools", "bin", "sandhole")
    return path if os.path.exists(path) else shutil.which("sandhole")


def install_sandhole():
    root = os.path.join(os.path.dirname(HERE), ".tools")
    log("installing sandhole from crates.io into bench/.tools (once; takes minutes)")
    subprocess.run(["cargo", "install", "sandhole", "--root", root], check=True)
    return sandhole_binary()


SANDHOLE_DOMAIN = "sandhole.localhost"


def start_sandhole(procs, tmp, binary, pubkey, cert, cert_key):
    """sandhole with our key as a user key, plain HTTP and HTTPS (our certificate), no ACME."""
    base = os.path.join(tmp, "sandhole")
    users = os.path.join(base, "user_keys")
    admins = os.path.join(base, "admin_keys")
    certs = os.path.join(base, "certificates", "localhost")
    for d in (users, admins, certs):
        os.makedirs(d, exist_ok=True)
    shutil.copy(pubkey, os.path.join(users, "bench.pub"))
    shutil.copy(cert, os.path.join(certs, "fullchain.pem"))
    shutil.copy(cert_key, os.path.join(certs, "privkey.pem"))
    ssh, http, https = free_port(), free_port(), free_port()
    proc = procs.start([binary, f"--domain={SANDHOLE_DOMAIN}", f"--user-keys-directory={users}",
                 f"--admin-keys-directory={admins}", f"--certificates-directory={os.path.dirname(certs)}",
                 f"--acme-cache-directory={os.path.join(base, 'acme')}",
                 f"--private-key-file={os.path.join(base, 'server_key')}",
                 "--listen-address=127.0.0.1", f"--ssh-port={ssh}", f"--http-port={http}", f"--https-port={https}",
                 "--allow-requested-subdomains", "--bind-hostnames=none",
                 # Every visitor and tunnel here comes from 127.0.0.1: lift the per-IP cap (64 -> its maximum).
                 "--max-simultaneous-connections-per-ip=65535"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "log"), "w"), preexec_fn=raise_nofile)
    wait_until("sandhole", lambda: socket.create_connection(("127.0.0.1", ssh), timeout=1).close() or True)
    return {"ssh": ssh, "http": http, "https": https, "proc": proc}


def ssh_tunnel(procs, ssh_port, key, origin_port, spec, user="tunnel"):
    """The same OpenSSH client for every tunnel: `ssh -N -R SPEC:localhost:ORIGIN`; a list of
    specs gives one `-R` each over the one session."""
    specs = spec if isinstance(spec, list) else [spec]
    forwards = [a for s in specs for a in ("-R", f"{s}:localhost:{origin_port}")]
    return procs.start([
        "ssh", "-F", "/dev/null", "-N", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ExitOnForwardFailure=yes",
        "-p", str(ssh_port), *forwards, f"{user}@127.0.0.1"],
        stdin=subprocess.DEVNULL)
