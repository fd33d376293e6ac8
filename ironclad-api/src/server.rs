//! Serving the control API on a Unix socket.
//!
//! Who may call: the socket is made mode 0600 (owner only: the daemon runs as root,
//! so root), and every call is checked again against the caller's credentials, which
//! the kernel gives with the connection (`SO_PEERCRED`): only root and the serving
//! process's own user are answered, others get `PERMISSION_DENIED`. A socket whose
//! mode was loosened by hand is therefore still not open to other users.
//!
//! Optionally the same service is served on TCP ([`serve_tcp`]) with mutual TLS only:
//! a client must present a certificate issued by the configured client CA, or the
//! handshake fails; a call on TCP without a verified client certificate is refused.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::v1::control_server::{Control, ControlServer};
use crate::ApiError;

/// The largest request decoded (64 KiB: a rule is a line; larger messages are refused
/// with `OUT_OF_RANGE` before they are read whole), but for `ApplyPolicy`.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The largest `ApplyPolicy` request decoded (64 MiB): a signed bundle carries its
/// feeds, and a real one is megabytes (a million-line blocklist is about 16 MB). Only
/// callers the API answers get this far: the caller check runs on the call's headers,
/// before any of its body is read.
pub const MAX_POLICY_REQUEST_BYTES: usize = 64 << 20;

/// The method of the one call that takes [`MAX_POLICY_REQUEST_BYTES`].
const APPLY_POLICY: &str = "ApplyPolicy";

/// Calls in progress on one connection at most; more wait (a client flooding calls
/// gets its answers late, other clients are not starved).
pub const MAX_CALLS_PER_CONNECTION: usize = 16;

/// Binds the API's socket at `path`: its directory is made (mode 0700) if missing, a
/// socket left by an earlier run is replaced (any other file is not: an error), and
/// the socket is made mode 0600. Call it before anything is enforced, so that a bad
/// path changes nothing.
///
/// # Errors
/// [`ApiError::Io`] for a file-system step, [`ApiError::NotASocket`] when a file that
/// is not a socket is at `path`.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ApiError> {
    let io = |what: &'static str| {
        move |source| ApiError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io("making the directory of"))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("restricting the directory of"))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io("removing the old socket"))?;
        }
        Ok(_) => return Err(ApiError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("inspecting")(e)),
    }
    // Made with no permission for anyone but the owner from the start: the umask is
    // the process's, so it is set around the bind alone.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound.map_err(io("binding"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("restricting"))?;
    listener
        .set_nonblocking(true)
        .map_err(io("making non-blocking"))?;
    Ok(listener)
}

/// Answers only root and the serving process's user (see the module's text).
#[derive(Debug, Clone, Copy)]
pub struct PeerCheck {
    own_uid: u32,
}

impl Default for PeerCheck {
    fn default() -> Self {
        Self {
            own_uid: rustix::process::geteuid().as_raw(),
        }
    }
}

impl Interceptor for PeerCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        // On TCP: the TLS handshake verified the client's certificate against the
        // client CA; a connection without one never gets here, but check anyway.
        if request.extensions().get::<UdsConnectInfo>().is_none() {
            return match request.peer_certs() {
                Some(certs) if !certs.is_empty() => Ok(request),
                _ => Err(Status::unauthenticated(
                    "the control API on TCP needs a client certificate (mutual TLS)",
                )),
            };
        }
        let uid = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .map(|cred| cred.uid());
        match uid {
            Some(uid) if uid == 0 || uid == self.own_uid => Ok(request),
            Some(uid) => Err(Status::permission_denied(format!(
                "uid {uid} may not use the Ironclad control API (root only)"
            ))),
            None => Err(Status::permission_denied(
                "the caller's credentials are unknown: the control API answers local root only",
            )),
        }
    }
}

/// Who made a call: `uid N pid P` on the Unix socket (as the kernel gave them), `tls
/// client sha256:FINGERPRINT` (of its certificate) on TCP.
pub fn caller<T>(request: &Request<T>) -> String {
    if let Some(cert) = request.peer_certs().and_then(|c| c.first().cloned()) {
        use sha2::Digest;
        return format!(
            "tls client sha256:{}",
            hex::encode(sha2::Sha256::digest(cert.as_ref()))
        );
    }
    match request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
    {
        Some(cred) => match cred.pid() {
            Some(pid) => format!("uid {} pid {pid}", cred.uid()),
            None => format!("uid {}", cred.uid()),
        },
        None => "unknown caller".to_string(),
    }
}

/// `service` with the request size limits and every call's caller checked.
fn checked<S: Control>(
    service: S,
) -> SizeLimits<tonic::service::interceptor::InterceptedService<ControlServer<S>, PeerCheck>> {
    SizeLimits {
        inner: tonic::service::interceptor::InterceptedService::new(
            ControlServer::new(service).max_decoding_message_size(MAX_POLICY_REQUEST_BYTES),
            PeerCheck::default(),
        ),
    }
}

/// The per-call request limits: tonic's decoding limit is one per service, so the
/// service takes [`MAX_POLICY_REQUEST_BYTES`] and every call but `ApplyPolicy` reads its
/// body through [`http_body_util::Limited`] at [`MAX_REQUEST_BYTES`] (and the 5 bytes of
/// the message's frame header): past it the call fails with `OUT_OF_RANGE`, having held
/// no more than that.
#[derive(Debug, Clone)]
pub struct SizeLimits<S> {
    inner: S,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for SizeLimits<S>
where
    S: tower::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(crate::v1::control_server::SERVICE_NAME))
            .and_then(|p| p.strip_prefix('/'));
        if method == Some(APPLY_POLICY) {
            return self.inner.call(request);
        }
        let (parts, body) = request.into_parts();
        let limited = http_body_util::BodyExt::map_err(
            http_body_util::Limited::new(body, MAX_REQUEST_BYTES + 5),
            |e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Status::out_of_range(format!(
                        "the request is larger than the {} KiB this call takes",
                        MAX_REQUEST_BYTES >> 10
                    ))
                } else {
                    Status::from_error(e)
                }
            },
        );
        self.inner.call(http::Request::from_parts(
            parts,
            tonic::body::Body::new(limited),
        ))
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for SizeLimits<S> {
    const NAME: &'static str = S::NAME;
}

/// The PEM files of the TCP listener's mutual TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: std::path::PathBuf,
    /// The server's private key.
    pub key: std::path::PathBuf,
    /// The CA that issues the clients' certificates: only its clients are answered.
    pub client_ca: std::path::PathBuf,
}

impl TlsFiles {
    /// Reads the files and checks the certificates and key parse, before anything is
    /// served.
    ///
    /// # Errors
    /// As [`serve_tcp`] would fail with them.
    pub fn check(&self) -> Result<(), ApiError> {
        tonic::transport::Server::builder().tls_config(self.config()?)?;
        Ok(())
    }

    fn config(&self) -> Result<tonic::transport::ServerTlsConfig, ApiError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| ApiError::Io {
                what: "reading",
                path: path.to_path_buf(),
                source,
            })
        };
        let identity = tonic::transport::Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(tonic::transport::Certificate::from_pem(read(
                &self.client_ca,
            )?))
            .client_auth_optional(false)
            .timeout(TLS_HANDSHAKE_TIMEOUT))
    }
}

/// TCP connections the listener serves at once at most; more wait in the kernel's
/// listen backlog until one ends. Each holds a descriptor: without a bound, a stranger
/// who opens a thousand connections and never starts TLS takes every descriptor of the
/// daemon, and its Unix socket, metrics listener and reloads with them.
pub const MAX_TCP_CONNECTIONS: usize = 256;

/// A TCP connection that has not completed its TLS handshake within this is closed.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Idle time after which TCP keepalive probes go out on a served connection, so that
/// a peer gone without a FIN (its path cut) is found and its connection closed.
pub const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// An accepted TCP connection holding one of the [`MAX_TCP_CONNECTIONS`] places
/// until it is dropped. tonic bounds calls per connection, not connections: this
/// small wrapper is the bound, since no maintained crate offers one for tonic's
/// incoming stream.
struct Capped {
    stream: tokio::net::TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Capped {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for Capped {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts from `listener` (keepalive set) while fewer than [`MAX_TCP_CONNECTIONS`]
/// are open, handing each connection to `to` with its place; ends when `to` is closed
/// (the server stopped), which closes the listening socket.
async fn accept_capped(
    listener: tokio::net::TcpListener,
    to: tokio::sync::mpsc::Sender<std::io::Result<Capped>>,
) {
    use tokio_stream::StreamExt;
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_keepalive(Some(TCP_KEEPALIVE))
        .with_nodelay(Some(true));
    loop {
        let place = tokio::select! {
            () = to.closed() => return,
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = to.closed() => return,
            accepted = incoming.next() => accepted,
        };
        let Some(accepted) = accepted else { return };
        let item = accepted.map(|stream| Capped {
            stream,
            _place: place,
        });
        if to.send(item).await.is_err() {
            return;
        }
    }
}

/// Serves `service` on the TCP `listener` with mutual TLS (see the module's text)
/// until `shutdown` completes. Must run inside a Tokio runtime. At most
/// [`MAX_TCP_CONNECTIONS`] connections are served at once, a handshake not done within
/// [`TLS_HANDSHAKE_TIMEOUT`] is dropped, and served connections carry TCP keepalive
/// ([`TCP_KEEPALIVE`]).
///
/// # Errors
/// [`ApiError::Io`] for a certificate file that cannot be read or a listener that
/// cannot join the runtime, [`ApiError::Transport`] for a bad certificate or key, or
/// when serving fails.
pub async fn serve_tcp<S, F>(
    listener: std::net::TcpListener,
    tls: &TlsFiles,
    service: S,
    shutdown: F,
) -> Result<(), ApiError>
where
    S: Control,
    F: std::future::Future<Output = ()> + Send,
{
    let config = tls.config()?;
    let io = |source| ApiError::Io {
        what: "serving on",
        path: "tcp".into(),
        source,
    };
    listener.set_nonblocking(true).map_err(io)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(io)?;
    let (to, from) = tokio::sync::mpsc::channel(1);
    tokio::spawn(accept_capped(listener, to));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(from);
    tonic::transport::Server::builder()
        .tls_config(config)?
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .add_service(checked(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Serves `service` on `listener` (from [`bind`]) until `shutdown` completes. Must run
/// inside a Tokio runtime.
///
/// # Errors
/// [`ApiError::Io`] when the listener cannot join the runtime, [`ApiError::Transport`]
/// when serving fails.
pub async fn serve<S, F>(
    listener: std::os::unix::net::UnixListener,
    service: S,
    shutdown: F,
) -> Result<(), ApiError>
where
    S: Control,
    F: std::future::Future<Output = ()> + Send,
{
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_default();
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|source| ApiError::Io {
        what: "serving on",
        path,
        source,
    })?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .add_service(checked(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
