//! Connecting to a control API served on a Unix socket.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::v1::control_client::ControlClient;
use crate::ApiError;

/// Connects to the API served at the Unix socket `path`. Must run inside a Tokio
/// runtime.
///
/// # Errors
/// [`ApiError::Transport`] when nothing answers at `path` (or the connection fails).
pub async fn connect(path: impl AsRef<Path>) -> Result<ControlClient<Channel>, ApiError> {
    let path: PathBuf = path.as_ref().to_path_buf();
    // The URI is required by the HTTP/2 layer and never resolved: every connection
    // goes to the socket.
    let channel = Endpoint::from_static("http://ironclad.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// Connects to the API served on TCP with mutual TLS at `addr` (`host:port`): the
/// server's certificate must be issued by `ca` (PEM) for `server_name`, and the client
/// presents `cert` and `key` (PEM). Must run inside a Tokio runtime.
///
/// # Errors
/// [`ApiError::Transport`] when the address is malformed, nothing answers, or the TLS
/// handshake fails (a certificate the other side does not accept).
pub async fn connect_tls(
    addr: &str,
    server_name: &str,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<ControlClient<Channel>, ApiError> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(cert, key))
        .domain_name(server_name);
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}
