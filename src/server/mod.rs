/*!
The daemon's server: a blocking `std::os::unix::net` listener, one thread
per connection, a cap on connections. The path of a request, one
direction only: socket → frame ([`connection`]) → typed request
([`crate::protocol`]) → scope check and handler ([`dispatch`]) → store →
typed response → frame. This module is the only place that maps internal
errors to wire codes.
*/
#![forbid(unsafe_code)]

pub mod concurrent;
pub mod connection;
pub mod dispatch;
pub mod limits;
pub mod permit;
pub mod reader;
pub mod socket;
pub mod wire;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::oauth::{OAuthConfig, OAuthHost};
use crate::profile::Scope;
use crate::secret::SecretString;
use crate::store::HostStore;
use crate::sys::{self, UserId};

/// Default cap on concurrent connections (and so on connection threads).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default requests per second per peer process.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 60;
pub use limits::DEFAULT_DAEMON_RATE_PER_SECOND;
/// A connection that sends nothing for this long is closed. One minute
/// longer than the client library's 5-minute idle close, so a well-behaved
/// client always closes first.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(360);
/// A response that cannot be written (the peer does not read and its
/// socket buffer is full) within this closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once a frame has started, the rest must arrive within this.
pub const PARTIAL_FRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A connection must complete its handshake within this of being
/// accepted (SPEC §11.7), so silent connections cannot hold the slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Added delay before answering a failed handshake.
pub const FAILED_HANDSHAKE_DELAY: Duration = Duration::from_millis(250);

/// Everything the server needs to run.
pub struct ServerConfig {
    /// Connection cap.
    pub max_connections: usize,
    /// Requests per second per peer process; `None` = unlimited.
    pub rate_limit: Option<u32>,
    /// Requests per second for the whole daemon; `None` = unlimited.
    pub daemon_rate_limit: Option<u32>,
    /// Extra peer uids allowed besides ours and root.
    pub allow_uids: Vec<UserId>,
    /// The capability token handshakes must carry, if any.
    pub capability_token: Option<SecretString>,
    /// What may be served at start (SIGHUP may replace it).
    pub scope: Scope,
    /// Idle timeout (overridable for tests).
    pub idle_timeout: Duration,
    /// Write timeout of one response (overridable for tests).
    pub write_timeout: Duration,
    /// OAuth providers and refresh timing.
    pub oauth: OAuthConfig,
    /// What the sandbox may do beyond reading (`--permit`).
    pub permits: permit::Permits,
    /// The GitHub broker's settings.
    pub github: crate::github::GithubConfig,
    /// Inject mode (`--inject`): sentinels on this socket, the real
    /// credentials only through the proxy socket.
    pub inject: Option<crate::inject::InjectConfig>,
}

/// State shared by all connection threads.
pub struct Shared {
    /// Configuration.
    pub config: ServerConfig,
    /// The host store.
    pub store: HostStore,
    /// Set when shutdown starts.
    pub stopping: AtomicBool,
    /// Open connections.
    pub active: AtomicUsize,
    /// Connection ids.
    pub next_conn: AtomicU64,
    /// Inject mode's sentinels (empty unless `--inject`).
    pub sentinels: crate::inject::Sentinels,
    /// Host-side refresh and renewal timers.
    pub oauth: OAuthHost,
    /// Request rate limits per peer process and for the daemon.
    pub limits: limits::Limits,
    scope: RwLock<Arc<Scope>>,
    /// A second handle on each open connection, so shutdown can stop
    /// their reads while in-flight requests finish.
    open: Mutex<HashMap<u64, UnixStream>>,
    /// Written once by [`Handle::stop`] to wake the accept loop, which
    /// polls the listener and the other end of this pipe: stopping needs
    /// neither the socket's path (it may be gone) nor a change to the
    /// listener (a service manager's socket must stay usable).
    wake: File,
}

impl Shared {
    fn open_connections(&self) -> std::sync::MutexGuard<'_, HashMap<u64, UnixStream>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The scope in force now.
    pub fn scope(&self) -> Arc<Scope> {
        self.scope.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The running server.
pub struct Server {
    listener: UnixListener,
    woken: File,
    shared: Arc<Shared>,
}

impl Server {
    /// Wraps a bound listener and starts the renewal thread.
    pub fn new(listener: UnixListener, config: ServerConfig, store: HostStore) -> Result<Server> {
        let scope = RwLock::new(Arc::new(config.scope.clone()));
        let oauth = OAuthHost::start(config.oauth.clone(), store.tokens.clone())?;
        let (woken, wake) =
            crate::sys::pipe().map_err(|e| crate::error::Error::io("cannot create the shutdown pipe", e))?;
        let shared = Arc::new(Shared {
            oauth,
            wake,
            limits: limits::Limits::new(config.rate_limit, config.daemon_rate_limit),
            scope,
            open: Mutex::new(HashMap::new()),
            config,
            store,
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            next_conn: AtomicU64::new(1),
            sentinels: crate::inject::Sentinels::default(),
        });
        Ok(Server { listener, woken, shared })
    }

    /// A handle that can stop the server or change its scope from
    /// another thread.
    pub fn handle(&self) -> Handle {
        Handle { shared: self.shared.clone() }
    }

    /// Serves the proxy socket (inject mode) on its own thread until the
    /// server stops.
    pub fn serve_proxy(&self, listener: UnixListener) -> Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || crate::inject::proxy::run(shared, listener))
            .map(drop)
            .map_err(|e| crate::error::Error::io("cannot start the proxy thread", e))
    }

    /// Accepts connections until stopped, then waits up to
    /// [`SHUTDOWN_GRACE`] for open connections to finish, and for a
    /// refresh in flight up to its own budget: a provider that has
    /// rotated the refresh token must see the new one saved.
    pub fn run(self) {
        loop {
            let (pending, woken) = match sys::wait_readable(self.listener.as_fd(), self.woken.as_fd()) {
                Ok(r) => r,
                Err(e) => {
                    crate::log_error!("poll on the listener failed: {e}");
                    break;
                }
            };
            if woken || self.shared.stopping.load(Ordering::SeqCst) {
                break;
            }
            if !pending {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) => {
                    crate::log_warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shared.oauth.stop();
        if !self.shared.oauth.wait_idle(crate::oauth::REFRESH_BUDGET) {
            crate::log_warn!("a token refresh was still in flight at exit");
        }
    }

    fn admit(&self, stream: UnixStream) {
        let conn = self.shared.next_conn.fetch_add(1, Ordering::SeqCst);
        let active = self.shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        if active > self.shared.config.max_connections {
            self.shared.active.fetch_sub(1, Ordering::SeqCst);
            crate::log_warn!("conn={conn} refused: {} connections open (cap)", active - 1);
            connection::refuse_busy(stream);
            return;
        }
        if let Ok(second) = stream.try_clone() {
            self.shared.open_connections().insert(conn, second);
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new().name(format!("conn-{conn}")).spawn(move || {
            connection::serve(&shared, conn, stream);
            shared.open_connections().remove(&conn);
            shared.active.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            self.shared.open_connections().remove(&conn);
            self.shared.active.fetch_sub(1, Ordering::SeqCst);
            crate::log_error!("conn={conn} cannot start a thread: {e}");
        }
    }
}

/// Controls a running [`Server`] from another thread.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Applies a re-read scope (SIGHUP), which may only narrow (SPEC
    /// §11.4): the new scope in force is what the old and the re-read one
    /// have in common. What left it loses its logins in progress and its
    /// renewal timers. Returns the scope now in force and whether the
    /// re-read one asked for more than that (logged and ignored).
    pub fn narrow_scope(&self, reread: &Scope) -> (Scope, bool) {
        let narrowed = {
            let mut current = self.shared.scope.write().unwrap_or_else(|e| e.into_inner());
            let narrowed = current.intersect(reread);
            *current = Arc::new(narrowed.clone());
            narrowed
        };
        self.shared.oauth.retain(&|p, b| narrowed.allows_token(p, b));
        let wider = narrowed != *reread;
        (narrowed, wider)
    }

    /// Stops accepting (wakes the accept loop through its pipe) and ends
    /// every connection's reading side: a request being
    /// handled still gets its answer, then the connection closes.
    /// Cancels every renewal timer.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.oauth.stop();
        for stream in self.shared.open_connections().values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        let _ = (&self.shared.wake).write(&[1]);
    }
}
