//! The hop between two nodes over real sockets: a visitor's stream reaches the holding node's
//! tunnel with the visitor's address; refusals come back as such; a node without a
//! certificate from the cluster's CA gets nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warren_peer::{ClusterCa, Dialer, NodeTls, Patience, PeerEndpoint};
use warren_registry::{
    BoxStream, Endpoint, Followed, Lookup, OpenError, Registry, RequestEntry, RequestLog, Route,
    RouteKind, RouteStats,
};
use warren_shards::Shards;

/// The owner's side on the holding node: says who the visitor is, then echoes.
struct Echo {
    opened: AtomicUsize,
    refuse: bool,
    /// The tunnel thread of the owner's session.
    thread: Option<usize>,
    /// The thread each stream was opened on.
    opened_on: Mutex<Vec<Option<usize>>>,
    /// Lines shown to the owner.
    lines: Mutex<Vec<String>>,
}

impl Echo {
    fn new(refuse: bool, thread: Option<usize>) -> Self {
        Self {
            opened: AtomicUsize::new(0),
            refuse,
            thread,
            opened_on: Mutex::new(Vec::new()),
            lines: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl Endpoint for Echo {
    async fn open(&self, visitor: SocketAddr) -> Result<BoxStream, OpenError> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.opened_on
            .lock()
            .expect("not poisoned")
            .push(Shards::current());
        if self.refuse {
            return Err(OpenError::Refused("nothing on localhost:8080".into()));
        }
        let (ours, mut theirs) = tokio::io::duplex(64 << 10);
        tokio::spawn(async move {
            let _ = theirs
                .write_all(format!("visitor={visitor}\n").as_bytes())
                .await;
            let mut buf = [0u8; 1024];
            while let Ok(n) = theirs.read(&mut buf).await {
                if n == 0 || theirs.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        Ok(Box::pin(ours))
    }
    fn notify(&self, line: String) {
        self.lines.lock().expect("not poisoned").push(line);
    }
    fn describe(&self) -> String {
        "echo".into()
    }
    fn shard(&self) -> Option<usize> {
        self.thread
    }
}

struct Holder {
    addr: String,
    echo: Arc<Echo>,
    registry: Arc<Registry>,
    _stop: tokio_util::sync::DropGuard,
}

/// Node 2: holds `app` (echo) and `down` (refused), serving other nodes under `ca`.
async fn holder(ca: &ClusterCa) -> Holder {
    holder_with(ca, Patience::default()).await
}

/// Node 2, letting quiet nodes go after `patience`.
async fn holder_with(ca: &ClusterCa, patience: Patience) -> Holder {
    let registry = Arc::new(Registry::new(Duration::from_secs(60), 10));
    // The owner of `app` runs on tunnel thread 1 of two.
    let echo = Arc::new(Echo::new(false, Some(1)));
    registry
        .bind("app", 1, 7, RouteKind::Http, echo.clone())
        .expect("bind");
    let refusing = Arc::new(Echo::new(true, None));
    registry
        .bind("down", 1, 7, RouteKind::Http, refusing)
        .expect("bind");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let addr = listener.local_addr().expect("addr").to_string();
    let tls = NodeTls::issue(ca).expect("node 2 certificate");
    let stop = CancellationToken::new();
    let token = stop.clone();
    let shards = Arc::new(Shards::start(2).expect("tunnel threads"));
    let serving = registry.clone();
    tokio::spawn(async move {
        warren_peer::serve(listener, &tls, serving, shards, patience, token).await
    });
    Holder {
        addr,
        echo,
        registry,
        _stop: stop.drop_guard(),
    }
}

/// Node 1's view of `name` on node 2, as owner 1's (the owner of node 2's routes), on a dialer
/// of its own.
fn endpoint(ca: &ClusterCa, addr: &str, name: &str) -> PeerEndpoint {
    PeerEndpoint::new(dialer(ca), "n2", addr, name, 1)
}

/// Node 1's dialer: every endpoint on it shares one records stream per node.
fn dialer(ca: &ClusterCa) -> Arc<Dialer> {
    let tls = NodeTls::issue(ca).expect("node 1 certificate");
    Arc::new(Dialer::new(&tls).expect("dialer"))
}

/// Node 1's dialer, whose stream to node 2 ends after `idle` without a record.
fn quiet_after(ca: &ClusterCa, idle: Duration) -> Arc<Dialer> {
    let tls = NodeTls::issue(ca).expect("node 1 certificate");
    Arc::new(Dialer::new(&tls).expect("dialer").with_lines_idle(idle))
}

const VISITOR: &str = "203.0.113.9:51000";

#[tokio::test]
async fn a_visitor_reaches_the_tunnel_on_the_holding_node() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    let app = endpoint(&ca, &node2.addr, "app");
    let mut stream = app
        .open(VISITOR.parse().expect("addr"))
        .await
        .expect("opened");
    let mut line = vec![0u8; format!("visitor={VISITOR}\n").len()];
    stream.read_exact(&mut line).await.expect("read");
    assert_eq!(
        String::from_utf8_lossy(&line),
        format!("visitor={VISITOR}\n")
    );
    stream
        .write_all(b"hello across nodes")
        .await
        .expect("write");
    let mut back = [0u8; 18];
    stream.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"hello across nodes");
    assert_eq!(app.describe(), "node n2");
    // The stream moved to the owner's tunnel thread before the channel was opened.
    assert_eq!(
        *node2.echo.opened_on.lock().expect("not poisoned"),
        [Some(1)]
    );

    // The owner's side refusing is a refusal here too; a name not held there is "away".
    let down = endpoint(&ca, &node2.addr, "down");
    match down.open(VISITOR.parse().expect("addr")).await {
        Err(OpenError::Refused(why)) => assert_eq!(why, "nothing on localhost:8080"),
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    let gone = endpoint(&ca, &node2.addr, "gone");
    match gone.open(VISITOR.parse().expect("addr")).await {
        Err(OpenError::Away(why)) => assert!(why.contains("not held on this node"), "{why}"),
        other => panic!("expected away, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn lines_for_the_owner_reach_the_holding_node() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    let dialer = dialer(&ca);
    let app = PeerEndpoint::new(dialer.clone(), "n2", &node2.addr, "app", 1);
    let gone = PeerEndpoint::new(dialer, "n2", &node2.addr, "gone", 1);
    gone.notify("for nobody".into());
    for i in 0..50 {
        app.notify(format!("GET /{i} 200 1ms"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lines = node2.echo.lines.lock().expect("not poisoned").clone();
        if lines.len() == 50 {
            let want: Vec<_> = (0..50).map(|i| format!("GET /{i} 200 1ms")).collect();
            assert_eq!(lines, want, "in order, each once, none for another name");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {lines:?} arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No channel was opened for them.
    assert_eq!(node2.echo.opened.load(Ordering::SeqCst), 0);
}

fn entry(path: &str, visitor: [u8; 4]) -> RequestEntry {
    RequestEntry {
        at_ms: 1_780_000_000_000,
        method: "GET".into(),
        path: path.into(),
        status: 200,
        duration: Duration::from_micros(1_234),
        bytes_in: 0,
        bytes_out: 5,
        visitor: IpAddr::from(visitor),
        user_agent: "curl/8".into(),
        headers: "host: app.localhost\naccept: */*".into(),
        complete: true,
    }
}

/// Polls until `log` holds `n` entries, then gives their paths.
async fn paths_once(log: &RequestLog, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let paths: Vec<String> = log.recent().iter().map(|e| e.path.clone()).collect();
        if paths.len() >= n {
            return paths;
        }
        assert!(tokio::time::Instant::now() < deadline, "only {paths:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A request a visitor made on node 1 goes into the log node 2 keeps of its tunnel, beside its
/// own visitors' requests; node 1 reads that log back, the recent entries and then each new
/// one as node 2 records it, and only for the tunnel's owner.
#[tokio::test]
async fn the_holder_keeps_every_nodes_requests_and_others_read_them() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    let app = endpoint(&ca, &node2.addr, "app");
    let log = node2.registry.request_log("app").expect("app keeps a log");
    log.record(entry("/on-2", [127, 0, 0, 2]));
    app.record(entry("/via-1", [203, 0, 113, 9]));
    app.notify("GET /via-1 200 1ms".into());
    assert_eq!(paths_once(&log, 2).await, ["/on-2", "/via-1"]);
    // Carried whole: the visitor's address, the headers' lines, the duration to the µs.
    assert_eq!(*log.recent()[1], entry("/via-1", [203, 0, 113, 9]));
    // The line for the owner came on the same stream, and no channel was opened.
    assert_eq!(
        *node2.echo.lines.lock().expect("not poisoned"),
        ["GET /via-1 200 1ms"]
    );
    assert_eq!(node2.echo.opened.load(Ordering::SeqCst), 0);

    let read = app.request_log(1, false).await.expect("read");
    let paths: Vec<_> = read.recent.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/on-2", "/via-1"]);
    assert_eq!(*read.recent[1], entry("/via-1", [203, 0, 113, 9]));

    // Followed: the recent ones, then each new one, wherever it was made.
    let mut feed = app.request_log(1, true).await.expect("follow");
    assert_eq!(feed.recent.len(), 2);
    log.record(entry("/later-on-2", [127, 0, 0, 2]));
    app.record(entry("/later-via-1", [203, 0, 113, 9]));
    for want in ["/later-on-2", "/later-via-1"] {
        match tokio::time::timeout(Duration::from_secs(10), feed.next()).await {
            Ok(Some(Followed::Entry(e))) => assert_eq!(e.path, want),
            other => panic!("expected {want}, got {other:?}"),
        }
    }

    // Another owner's reader, or a name without a log there, gets nothing.
    match app.request_log(2, false).await {
        Err(OpenError::Refused(why)) => assert!(why.contains("no request log"), "{why}"),
        other => panic!("expected no log, got {other:?}"),
    }
    let gone = endpoint(&ca, &node2.addr, "gone");
    assert!(matches!(
        gone.request_log(1, false).await,
        Err(OpenError::Refused(_))
    ));
    // A node that does not answer: the reader is told to come back (the API's 503).
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    match endpoint(&ca, &dead, "app").request_log(1, false).await {
        Err(OpenError::Away(_)) => {}
        other => panic!("expected away, got {other:?}"),
    }
}

/// Node 1's view is a moment late: `app` changed hands on node 2 before the records of a visit
/// to its previous owner's tunnel arrived. Node 2 drops them (the entry, the line, the counts)
/// rather than give them to the new owner, and takes the records for the owner it serves.
#[tokio::test]
async fn records_about_a_names_previous_owner_are_dropped() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    // One dialer: one stream to node 2, whose records arrive in the order sent.
    let dialer = dialer(&ca);
    let previous = PeerEndpoint::new(dialer.clone(), "n2", &node2.addr, "app", 2);
    let app = PeerEndpoint::new(dialer, "n2", &node2.addr, "app", 1);
    let Lookup::Live(route) = node2.registry.lookup_local("app") else {
        panic!("app is held on node 2");
    };
    assert_eq!(route.owner, 1);
    let log = node2.registry.request_log("app").expect("app keeps a log");
    previous.record(entry("/not-yours", [198, 51, 100, 7]));
    previous.notify("GET /not-yours 200 1ms".into());
    assert!(previous.report(counters(5, 500, 3)));
    app.record(entry("/yours", [203, 0, 113, 9]));
    app.notify("GET /yours 200 1ms".into());
    assert!(app.report(counters(1, 50, 0)));
    counted(&route, (1, 10, 50, 0)).await;
    assert_eq!(paths_once(&log, 1).await, ["/yours"]);
    assert_eq!(
        *node2.echo.lines.lock().expect("not poisoned"),
        ["GET /yours 200 1ms"]
    );
}

fn counters(requests: u64, bytes_out: u64, connections: usize) -> RouteStats {
    RouteStats {
        since: 1_780_000_000,
        requests,
        bytes_in: requests * 10,
        bytes_out,
        connections,
        max_connections: 512,
    }
}

/// Waits (10 s at most) until the holder's counters of `route` across the cluster are `want`:
/// requests, bytes in, bytes out, open connections.
async fn counted(route: &Route, want: (u64, u64, u64, usize)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = route.cluster_stats();
        let got = (s.requests, s.bytes_in, s.bytes_out, s.connections);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Node 1 reports what its visitors of node 2's tunnel did; node 2's counters of the tunnel add
/// them to its own, any node asking node 2 gets those, and the connections node 1 held open are
/// taken back when its stream ends, until node 1 says them again.
#[tokio::test]
async fn the_holders_counters_are_the_clusters() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    let dialer = quiet_after(&ca, Duration::from_millis(300));
    let app = PeerEndpoint::new(dialer.clone(), "n2", &node2.addr, "app", 1);
    let Lookup::Live(route) = node2.registry.lookup_local("app") else {
        panic!("app is held on node 2");
    };
    route.requests.fetch_add(1, Ordering::Relaxed);
    route.count_bytes(0, 100);
    assert!(app.report(counters(3, 50, 2)));
    counted(&route, (4, 30, 150, 2)).await;
    // Reports carry changes: the same counters again add nothing, later ones what is new.
    assert!(!app.report(counters(3, 50, 2)), "nothing new");
    assert!(app.report(counters(5, 70, 1)));
    counted(&route, (6, 50, 170, 1)).await;
    // Node 2's own counters stay its own (its metrics add them up).
    assert_eq!(route.stats().requests, 1);

    // Another node asks: node 2 answers for what it holds, with every node's visitors.
    let got = app
        .holder_stats(vec!["app".into(), "gone".into()])
        .await
        .expect("asked");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got["app"], route.cluster_stats());

    // Node 1's stream ends (idle here; cut, or its node gone, the same): its connections go.
    counted(&route, (6, 50, 170, 0)).await;
    assert_eq!(dialer.lines_streams(), 0);
    // A node still up says its open connections again at its next report, changed or not,
    // on a new stream.
    assert!(!app.report(counters(5, 70, 1)), "nothing new");
    counted(&route, (6, 50, 170, 1)).await;
}

/// A node that said it holds visitor connections and then stops reporting (gone without a
/// word: no FIN, no reset) has them taken back once the holder's patience runs out; a node that
/// keeps reporting keeps them counted.
#[tokio::test]
async fn a_node_that_stops_reporting_its_connections_is_let_go() {
    let ca = ClusterCa::generate().expect("ca");
    let patience = Patience {
        reports: Duration::from_millis(400),
        ..Patience::default()
    };
    let node2 = holder_with(&ca, patience).await;
    // Node 1's stream would stay open a minute without a record: only the holder ends it.
    let dialer = quiet_after(&ca, Duration::from_secs(60));
    let app = PeerEndpoint::new(dialer.clone(), "n2", &node2.addr, "app", 1);
    let Lookup::Live(route) = node2.registry.lookup_local("app") else {
        panic!("app is held on node 2");
    };
    assert!(app.report(counters(1, 10, 2)));
    counted(&route, (1, 10, 10, 2)).await;
    // Reporting every 100 ms, as a live node does every second: counted all along.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.report(counters(1, 10, 2));
        assert_eq!(route.cluster_stats().connections, 2);
    }
    // Silent from here on: let go after the patience, not before.
    let quiet = tokio::time::Instant::now();
    // The counts stay; the connections go.
    counted(&route, (1, 10, 10, 0)).await;
    let after = quiet.elapsed();
    println!("a quiet node's connections were taken back after {after:?}");
    assert!(after >= Duration::from_millis(300), "{after:?}");
}

#[tokio::test]
async fn strangers_get_nothing() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    // A node of another cluster (its own CA): the handshake fails, no channel is opened.
    let other = ClusterCa::generate().expect("other ca");
    let intruder = endpoint(&other, &node2.addr, "app");
    match intruder.open(VISITOR.parse().expect("addr")).await {
        Err(OpenError::Away(why)) => assert!(why.contains(&node2.addr), "{why}"),
        other => panic!("expected a failed handshake, got {:?}", other.err()),
    }
    // Plain TCP speaking the header without TLS: closed, nothing opened.
    let mut plain = tokio::net::TcpStream::connect(&node2.addr)
        .await
        .expect("connect");
    let header =
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x09\x00\x00\x00\x00\xc7\x38\x00\x00";
    let _ = plain.write_all(header).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut answer))
        .await
        .expect("closed within the handshake timeout")
        .ok();
    // A TLS alert record (type 21, fatal) and the close: nothing of the tunnel.
    assert_eq!(answer.first(), Some(&21), "{answer:?}");
    assert!(answer.len() <= 7, "{answer:?}");
    assert_eq!(node2.echo.opened.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_quiet_lines_stream_ends_and_the_next_line_opens_it_again() {
    let ca = ClusterCa::generate().expect("ca");
    let node2 = holder(&ca).await;
    let dialer = quiet_after(&ca, Duration::from_millis(200));
    let app = PeerEndpoint::new(dialer.clone(), "n2", &node2.addr, "app", 1);
    let seen = |n: usize| {
        let echo = node2.echo.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let lines = echo.lines.lock().expect("not poisoned").clone();
                if lines.len() >= n {
                    return lines;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "only {lines:?} arrived"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    app.notify("GET /first 200 1ms".into());
    seen(1).await;
    assert_eq!(dialer.lines_streams(), 1);
    // Quiet past the idle time: the stream and its task end (a node that left holds nothing).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dialer.lines_streams() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lines stream outlived its idle time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same endpoint's next line opens a new one and arrives.
    app.notify("GET /second 200 1ms".into());
    assert_eq!(seen(2).await, ["GET /first 200 1ms", "GET /second 200 1ms"]);
    assert_eq!(dialer.lines_streams(), 1);
}
