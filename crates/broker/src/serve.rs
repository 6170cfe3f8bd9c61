//! `broker serve`: wire the store, registry, SSH server and edge together and run until told
//! to stop.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tracing::{info, warn};
use warren_edge::{Edge, EdgeSettings, ProxySources, TcpPorts};
use warren_registry::Registry;
use warren_shards::Shards;
use warren_ssh::{Sessions, SshServer, SshSettings};
use warren_store::Store;
use warren_tls::{CertStore, Challenges, Resolver};

use crate::config::{Config, SettingsArgs};

/// The file of a SQLite database URL (`None` for Postgres).
pub fn sqlite_path(url: &str) -> Option<&std::path::Path> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(std::path::Path::new(path.split('?').next().unwrap_or(path)))
}

/// Opens the store for an admin command, which must never create one: run in the wrong
/// directory, or without the server's `--config`, it would otherwise make a new empty
/// database and report success while the running broker sees nothing.
pub async fn open_existing_store(config: &Config) -> Result<Arc<dyn Store>> {
    if let Some(path) = sqlite_path(&config.database_url.0)
        && !path.exists()
    {
        anyhow::bail!(
            "no database at {}: this command would create a new, empty one. Point it at the \
             broker's (--config FILE, --data-dir DIR or BROKER_DATABASE_URL; config files are \
             looked for in {}), or create it with `broker migrate`",
            path.display(),
            crate::config::DEFAULT_CONFIG_FILES.join(", ")
        );
    }
    open_store(config).await
}

/// Opens the configured store, creating the SQLite file and its folder if needed.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>> {
    let url = &config.database_url.0;
    if let Some(dir) = sqlite_path(url)
        .and_then(|p| p.parent())
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    warren_store::open_pooled(url, config.database_pool)
        .await
        .with_context(|| format!("cannot open database {}", config.database_url.redacted()))
}

/// Whether Postgres can take every node's connections at once: the live nodes (and this one,
/// if it is not among them yet), each opening its whole pool (`database_pool`, counted as this
/// node's for all) and [`warren_store::EXTRA_CONNECTIONS`], against what the server allows
/// non-superusers.
pub struct ConnectionBudget {
    pub nodes: usize,
    pub pool: u32,
    pub each: i64,
    pub need: i64,
    pub limit: i64,
}

impl ConnectionBudget {
    /// `None` on a database without such a limit (SQLite).
    pub async fn read(store: &dyn Store, pool: u32, this_node: &str) -> Result<Option<Self>> {
        let Some(limit) = store.connection_limit().await? else {
            return Ok(None);
        };
        let rows = store.list_nodes().await?;
        let alive = rows.iter().filter(|n| n.alive());
        let others = alive.filter(|n| n.name != this_node).count();
        let each = i64::from(pool) + i64::from(warren_store::EXTRA_CONNECTIONS);
        let nodes = others + 1;
        Ok(Some(Self {
            nodes,
            pool,
            each,
            need: nodes as i64 * each,
            limit,
        }))
    }

    pub fn fits(&self) -> bool {
        self.need <= self.limit
    }

    /// The one line that says so, and what to change when it does not.
    pub fn describe(&self) -> String {
        let Self {
            nodes,
            pool,
            each,
            need,
            limit,
        } = self;
        if self.fits() {
            format!(
                "Postgres allows {limit} connections to non-superusers; {nodes} node(s) with \
                 database_pool = {pool} may open {need} ({each} each)"
            )
        } else {
            format!(
                "Postgres allows {limit} connections to non-superusers, and {nodes} node(s) with \
                 database_pool = {pool} may open {need} ({each} each: the pool, the LISTEN and \
                 the ACME lease): raise Postgres's max_connections, or lower database_pool on \
                 every node"
            )
        }
    }
}

/// Warns at start when the nodes would not fit (see [`ConnectionBudget`]): past Postgres's
/// limit, a reconnect storm's key lookups and claims fail with "too many clients" on some
/// node. Ten nodes at the default pool need 180, against Postgres's default 97.
async fn check_connection_budget(store: &dyn Store, pool: u32, this_node: &str) {
    match ConnectionBudget::read(store, pool, this_node).await {
        Ok(None) => {}
        Ok(Some(b)) if b.fits() => {
            info!(
                nodes = b.nodes,
                need = b.need,
                limit = b.limit,
                "Postgres connections suffice"
            )
        }
        Ok(Some(b)) => warn!(
            nodes = b.nodes,
            database_pool = b.pool,
            need = b.need,
            limit = b.limit,
            "{}",
            b.describe()
        ),
        Err(e) => warn!(error = %e, "cannot read Postgres's connection limit"),
    }
}

/// Runs the broker until SIGTERM or Ctrl-C; `args` are what `config` was loaded from, read
/// again on SIGHUP.
pub async fn serve(config: Config, args: SettingsArgs) -> Result<()> {
    crate::logging::init(&config)?;
    let mut signals = crate::signals::Signals::install();
    let open_files = raise_open_file_limit();
    let flood = config.flood.resolve(open_files);
    crate::config::log_flood_limits(&flood, open_files);
    let (metrics, prometheus) = crate::observe::recorder()?;

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let store = open_store(&config).await?;
    let host_key =
        warren_ssh::load_or_create_host_key(&config.data_dir.join("ssh_host_ed25519_key"))?;
    let fingerprint = warren_ssh::host_key_fingerprint(&host_key);

    let ssh_listener = TcpListener::bind(config.ssh_addr)
        .await
        .with_context(|| format!("ssh_addr: cannot listen on {}", config.ssh_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("http_addr: cannot listen on {}", config.http_addr))?;
    let https_listener = TcpListener::bind(config.https_addr)
        .await
        .with_context(|| format!("https_addr: cannot listen on {}", config.https_addr))?;
    let ssh_addr = ssh_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let https_addr = https_listener.local_addr()?;

    let cluster_listener = match config.cluster.listen {
        Some(addr) if store.shared() => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cluster_listen: cannot listen on {addr}"))?,
        ),
        _ => None,
    };
    let cluster_addr = match (&config.cluster.cluster_addr, &cluster_listener) {
        (Some(addr), _) => Some(addr.clone()),
        (None, Some(l)) => Some(l.local_addr()?.to_string()),
        (None, None) => None,
    };
    // Before anything is served: a second broker on one SQLite file, or a second node with
    // this node's name, stops here with a line that names the other one.
    let cluster = warren_cluster::Membership::join(
        store.clone(),
        warren_cluster::NodeSettings {
            name: config.cluster.node_name.clone(),
            public_addr: ssh_addr.to_string(),
            cluster_addr,
            lease: config.cluster.lease,
        },
        metrics.clone(),
    )
    .await?;
    check_connection_budget(
        store.as_ref(),
        config.database_pool,
        &config.cluster.node_name,
    )
    .await;

    let certs = Arc::new(CertStore::new());
    let challenges = Arc::new(Challenges::new());
    let tls_on = config.tls_files.is_some() || config.public.acme.is_some();
    if let Some((chain, key)) = &config.tls_files {
        let (key, info) = warren_tls::load_pem_files(chain, key)
            .with_context(|| format!("tls_cert/tls_key: cannot use {}", chain.display()))?;
        let key = Arc::new(key);
        for name in &info.names {
            certs.insert(name, key.clone());
        }
        info!(names = ?info.names, not_after = info.not_after, "serving the operator's certificate");
    }
    let tls_config =
        warren_tls::server_config(Arc::new(Resolver::new(certs.clone(), challenges.clone())));

    let registry = Arc::new(
        Registry::new(config.grace, config.max_tunnel_connections)
            .with_owner_limits(config.owner_limits)
            .with_request_log(config.request_log_entries)
            .with_bandwidth(config.max_tunnel_bytes_per_sec),
    );
    let restored = crate::sticky::restore(store.as_ref(), &registry).await?;
    if restored > 0 {
        info!(
            names = restored,
            "random names kept for their owners' reconnects"
        );
    }
    let sessions = Arc::new(Sessions::default());
    let ssh_settings = SshSettings {
        urls: public_urls(&config, http_addr.port(), https_addr.port()),
        auto_claim: config.auto_claim,
        // This binary always listens for HTTPS (`https_listener` above); the setting is for
        // an SSH front without one (`ask::classify` is tested both ways).
        tls_passthrough: true,
        keepalive_interval: config.keepalive,
        keepalive_max: config.keepalive_max,
        auth_timeout: config.auth_timeout,
        limits: config.session_limits,
        proxy_sources: ProxySources::new(config.proxy_protocol_from.clone()),
    };
    let example_url = ssh_settings.url_for("NAME");
    let console_url = ssh_settings.url_for(&config.console_label);
    let tenants = tenants_for(
        &config,
        store.clone(),
        Some(registry.clone()),
        ssh_settings.urls.clone(),
        ssh_addr.port(),
    );
    let hold_release: warren_tenants::HoldRelease = {
        let cluster = cluster.clone();
        Arc::new(move |name: &str, session| {
            if cluster.shared() {
                let (cluster, name) = (cluster.clone(), name.to_owned());
                tokio::spawn(async move { cluster.release(&name, session).await });
            }
        })
    };
    let tenants = tenants.with_hold_release(hold_release.clone());
    // Codes live in this process: the SSH side issues them, the API (here) decides them.
    let tenants = if config.pairing {
        tenants.with_pairings(Arc::new(warren_tenants::Pairings::new(console_url.clone())))
    } else {
        tenants
    };
    let api = warren_api::ApiState::new(
        tenants.clone(),
        warren_api::ApiSettings {
            secure_cookies: config.public_scheme == "https",
        },
    )
    .await
    .context("cannot load the API's session keys")?;
    let api_router = warren_api::router(api);
    // The console host is a route like a tunnel's, owned by no user (id 0): the edge serves it
    // with everything it does for tunnels, and no tenant can bind its name. It serves the web
    // console's pages, and the API under /api/ (the console's only back end).
    registry
        .bind(
            &config.console_label,
            CONSOLE_OWNER,
            CONSOLE_SESSION,
            warren_registry::RouteKind::Http,
            Arc::new(warren_api::LocalEndpoint::new(warren_console::router(
                api_router.clone(),
            ))),
        )
        .map_err(|e| anyhow::anyhow!("console_host: {e}"))?;
    let stages = crate::drain::Stages::new();
    let shutdown = stages.shutdown.clone();
    let tasks = tokio_util::task::TaskTracker::new();
    let shards =
        Arc::new(Shards::start(config.tunnel_threads).context("cannot start the tunnel threads")?);
    // One admission for every visitor listener: an IP's count spans HTTP, HTTPS and TCP.
    let visitor_admission = Arc::new(config.flood.visitors(&flood));
    let tcp_ports = Arc::new(
        TcpPorts::new(
            config.tcp_addr,
            config.tcp_ports.clone(),
            config.domain.clone(),
            registry.clone(),
            shutdown.clone(),
        )
        .with_shards(shards.clone())
        .with_metrics(metrics.clone())
        .with_admission(visitor_admission.clone())
        .with_proxy_sources(ProxySources::new(config.proxy_protocol_from.clone())),
    );
    let ssh = Arc::new(
        SshServer::new(
            ssh_settings,
            host_key,
            store.clone(),
            registry.clone(),
            sessions.clone(),
        )
        .with_tcp_ports(tcp_ports.clone())
        .with_tenants(tenants.clone())
        .with_metrics(metrics.clone())
        .with_shards(shards.clone())
        .with_drain(stages.draining.clone())
        .with_admission(Arc::new(config.flood.ssh(&flood)))
        .with_auth_failures(Arc::new(config.flood.ssh_auth_failures()))
        .with_cluster(cluster.clone()),
    );
    // Share cookies are signed with a key every node on this database holds.
    let share_key = crate::policy::share_key(&*store).await?;
    let edge = Arc::new(
        Edge::new(
            EdgeSettings {
                domain: config.domain.clone(),
                max_header_bytes: config.max_header_bytes,
                max_headers: config.max_headers,
                header_read_timeout: config.header_timeout,
                origin_timeout: config.origin_timeout,
                trusted_proxies: config.trusted_proxies.clone(),
                proxy_sources: ProxySources::new(config.proxy_protocol_from.clone()),
                redirect_https_port: (tls_on && config.https_redirect)
                    .then(|| config.public_tls_port.unwrap_or(https_addr.port())),
                hsts_max_age: config.hsts_max_age,
            },
            registry.clone(),
        )
        .with_http01({
            let challenges = challenges.clone();
            Arc::new(move |token: &str| challenges.http01(token))
        })
        .with_shares(
            Arc::new(crate::policy::StoreRedeemer(store.clone())),
            share_key,
        )
        .with_shards(shards.clone())
        .with_certificate_check({
            let certs = certs.clone();
            Arc::new(move |host: &str| certs.get(host).is_some())
        })
        .with_metrics(metrics.clone())
        .with_admission(visitor_admission),
    );

    let (public, public_info) = crate::public::Public::start(
        &config,
        store.clone(),
        registry.clone(),
        certs.clone(),
        challenges.clone(),
        &tasks,
        &shutdown,
        &metrics,
    )
    .await?;
    // One node of a cluster alerts (the ACME lease's holder); one alone always does.
    let alerting = Arc::new(std::sync::atomic::AtomicBool::new(!store.shared()));
    if store.shared() {
        tasks.spawn(crate::leader::run(
            store.clone(),
            public.clone(),
            alerting.clone(),
            metrics.clone(),
            (config.cluster.lease / 3).max(std::time::Duration::from_millis(100)),
            shutdown.clone(),
        ));
        tasks.spawn(crate::leader::mirror_challenges(
            store.clone(),
            challenges.clone(),
            shutdown.clone(),
        ));
    }
    let (alert_tx, alert_rx) = warren_alerts::channel();
    let watcher = crate::watch::Watcher::start(
        public.clone(),
        store.clone(),
        registry.clone(),
        sessions.clone(),
        alert_tx,
        tenants.settings.urls.clone(),
        hold_release,
    )
    .await?;
    let alert_settings = Arc::new(config.alerts.clone());
    let wake = Arc::new(tokio::sync::Notify::new());
    let deliverer = warren_alerts::Deliverer::new(
        store.clone(),
        alert_settings.clone(),
        metrics.clone(),
        wake.clone(),
    )?
    .while_leading(warren_alerts::Leading::flag(alerting.clone()));
    let alerts = warren_alerts::Alerts::new(store.clone(), alert_settings, wake)
        .while_leading(warren_alerts::Leading::flag(alerting));
    let domains = crate::domains::DomainTask::new(
        tenants.clone(),
        registry.clone(),
        public.acme(),
        config.domains.intervals,
    );
    let listeners = Arc::new(crate::observe::Listeners::default());
    tasks.spawn(listeners.watch("ssh", warren_ssh::run(ssh_listener, shutdown.clone(), ssh)));
    tasks.spawn(listeners.watch(
        "http",
        warren_edge::run(http_listener, stages.draining.clone(), edge.clone()),
    ));
    tasks.spawn(listeners.watch(
        "https",
        warren_edge::run_tls(
            https_listener,
            stages.draining.clone(),
            edge.clone(),
            tls_config,
        ),
    ));
    tasks.spawn(crate::observe::upkeep(prometheus.clone(), shutdown.clone()));
    tasks.spawn(crate::malloc::trim_every_while(shutdown.clone()));
    tasks.spawn(watcher.run(shutdown.clone()));
    tasks.spawn(cluster.clone().run(registry.clone(), shutdown.clone()));
    crate::peers::start(
        crate::peers::Peers {
            store: store.clone(),
            cluster: cluster.clone(),
            registry: registry.clone(),
            ports: Some(tcp_ports as Arc<dyn warren_registry::PortAllocator>),
            listener: cluster_listener,
            grace: config.grace,
            shards,
        },
        &tasks,
        &shutdown,
    )
    .await?;
    tasks.spawn(alerts.run(alert_rx, shutdown.clone()));
    tasks.spawn(deliverer.run(shutdown.clone()));
    tasks.spawn(domains.run(shutdown.clone()));
    let admin_addr = match config.admin_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin_addr: cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            let stop = shutdown.clone();
            // /metrics, /healthz and /readyz here only: the console host (the same API
            // through the edge) is open to visitors.
            let observer = crate::observe::Observer {
                handle: prometheus,
                metrics: metrics.clone(),
                registry: registry.clone(),
                sessions: sessions.clone(),
                certs: certs.clone(),
                store: store.clone(),
                listeners: listeners.clone(),
                sqlite_file: sqlite_path(&config.database_url.0).map(|p| p.to_path_buf()),
                console_owner: CONSOLE_OWNER,
                draining: stages.draining.clone(),
            };
            let status = crate::status::Status::publish(
                &config.data_dir,
                local,
                tenants.clone(),
                config.console_label.clone(),
            )?;
            let service = api_router
                .merge(crate::observe::router(Arc::new(observer)))
                .merge(crate::status::router(Arc::new(status)))
                .into_make_service_with_connect_info::<std::net::SocketAddr>();
            tasks.spawn(async move {
                if let Err(e) = axum::serve(listener, service)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    warn!(error = %e, "admin listener failed");
                }
            });
            Some(local)
        }
        None => None,
    };
    tasks.close();

    // Stable lines on stdout: people read them, and the test harness finds the ports here.
    println!("Warren broker {} ready", env!("CARGO_PKG_VERSION"));
    println!("  ssh   {ssh_addr}  host key {fingerprint}");
    println!("  http  {http_addr}  tunnels at {example_url}");
    println!(
        "  https {https_addr}  TLS passthrough with -R NAME:443:…{}",
        if config.tls_files.is_some() {
            ", certificates from tls_cert"
        } else {
            ""
        }
    );
    println!(
        "  tcp   {}:{}-{}  raw TCP with -R tcp:0:…",
        config.tcp_addr,
        config.tcp_ports.start(),
        config.tcp_ports.end()
    );
    match admin_addr {
        Some(a) => println!("  api   http://{a}/api/v1  console {console_url}"),
        None => println!("  api   {console_url}/api/v1  (admin_addr off)"),
    }
    println!(
        "  node  {}  {}",
        cluster.name(),
        if cluster.shared() {
            "one of the nodes sharing this database (broker nodes)"
        } else {
            "the only node on this SQLite database"
        }
    );
    println!("  dns   {}", public_info.dns);
    println!("  acme  {}", public_info.acme);
    println!(
        "  data  {}  database {}",
        config.data_dir.display(),
        config.database_url.redacted()
    );
    match tenants.setup_token().await {
        Ok(Some(token)) => {
            println!("First run: no admin has a password yet. Within an hour, set one once at");
            println!("  {console_url}/setup#{token}");
            if let Some(a) = admin_addr {
                println!(
                    "  or: curl -H 'content-type: application/json' -d '{{\"token\":\"{token}\",\"name\":\"admin\",\"password\":\"…\"}}' http://{a}/api/v1/setup"
                );
            }
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot create the setup link"),
    }
    println!(
        "Try: ssh -p {} -R 0:localhost:8000 tunnel@{}",
        ssh_addr.port(),
        ssh_addr.ip()
    );
    info!(%ssh_addr, %http_addr, host_key = %fingerprint, "listening");

    crate::notify::ready("serving");

    while signals.next().await == crate::signals::Signal::Reload {
        crate::notify::reloading();
        crate::reload::reload(&args, &config, &certs);
        crate::notify::ready("serving");
    }
    crate::notify::stopping();
    crate::drain::drain(&stages, config.shutdown_grace, &edge, &sessions, &tasks).await;
    if admin_addr.is_some() {
        crate::status::unpublish(&config.data_dir);
    }
    Ok(())
}

/// The console route's owner: no user has id 0 (ids start at 1 on both backends).
const CONSOLE_OWNER: i64 = warren_registry::BROKER_OWNER;
/// The console route's session: SSH sessions are numbered from 1.
const CONSOLE_SESSION: warren_registry::SessionId = 0;

/// How this broker writes public URLs, given the ports its HTTP and HTTPS listeners have
/// (the bound ones in `serve`, the configured ones in admin commands). The configured public
/// ports win: behind a load balancer or a port forward, visitors use those.
pub fn public_urls(config: &Config, http_port: u16, https_port: u16) -> warren_tenants::PublicUrls {
    let tls_port = config.public_tls_port.unwrap_or(https_port);
    warren_tenants::PublicUrls {
        domain: config.domain.clone(),
        scheme: config.public_scheme.clone(),
        port: if config.public_scheme == "https" {
            config
                .public_tls_port
                .or(config.public_port)
                .unwrap_or(https_port)
        } else {
            config.public_port.unwrap_or(http_port)
        },
        tls_port,
        tcp_host: config.domain.clone(),
    }
}

/// The service functions with this broker's settings; `registry` only in the serving process.
pub fn tenants_for(
    config: &Config,
    store: Arc<dyn Store>,
    registry: Option<Arc<Registry>>,
    urls: warren_tenants::PublicUrls,
    ssh_port: u16,
) -> warren_tenants::Tenants {
    let tenants = warren_tenants::Tenants::new(
        store,
        registry,
        warren_tenants::TenantSettings {
            urls,
            default_quotas: warren_tenants::DefaultQuotas {
                max_reservations: config.session_limits.names_per_user as i64,
                max_tunnels: config.owner_limits.routes as i64,
                max_visitor_connections: config.max_tunnel_connections as i64,
                max_tunnel_bytes_per_sec: i64::try_from(config.max_tunnel_bytes_per_sec)
                    .unwrap_or(i64::MAX),
            },
            tcp_ports: (*config.tcp_ports.start(), *config.tcp_ports.end()),
            reserved_labels: vec![config.console_label.clone()],
            ssh: warren_tenants::SshEndpoint {
                ssh_host: config.public_ssh_host.clone(),
                ssh_port: config.public_ssh_port.unwrap_or(ssh_port),
                ssh_user: "tunnel".into(),
            },
            dns_managed: !matches!(config.public.dns, crate::config::DnsConfig::None),
        },
    );
    let tenants = tenants.with_webhooks(warren_tenants::WebhookSettings {
        allow_private: config.alerts.allow_private,
    });
    match crate::domains::checking(config) {
        Some(domains) => tenants.with_domains(domains),
        None => tenants,
    }
}

/// Each tunnel and each visitor connection is a file descriptor, and the soft limit a service
/// starts with (1,024 under systemd) cut off every visitor and owner once a stranger held 1,100
/// idle connections. The hard limit is the operator's to set (`LimitNOFILE`); the soft one is
/// ours to raise to it. Returns the soft limit in force, which the connection limits' defaults
/// are derived from (config/flood.rs).
fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            info!(open_files = n, "open-file limit");
            n
        }
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}
