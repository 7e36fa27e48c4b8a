/*!
A fresh upstream connection: plain TCP to a loopback override, else TLS
with rustls and the platform verifier, never to a link-local or cloud
metadata address.
*/
#![forbid(unsafe_code)]

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{CONNECT_TIMEOUT, Origin, UpstreamError};

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_platform_verifier())
                .map(|b| Arc::new(b.with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Whether the proxy may connect to `ip` for a real (not overridden)
/// origin: never link-local or cloud metadata addresses.
fn allowed_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) != 0xfe80 && !(s[0] == 0xfd00 && s[1] == 0x0ec2)
        }
    }
}

/// A fresh connection (TLS set up lazily by the first write).
pub(super) fn connect(origin: &Origin) -> Result<(BufReader<Stream>, TcpStream), UpstreamError> {
    let addrs: Vec<SocketAddr> = (origin.host.as_str(), origin.port)
        .to_socket_addrs()
        .map_err(|e| UpstreamError::Connect(e.to_string()))?
        .filter(|a| !origin.tls || allowed_address(a.ip()))
        .collect();
    let mut last = UpstreamError::Connect("no usable address".into());
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = UpstreamError::Connect(e.to_string()),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    let socket = tcp.try_clone().map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(60)));
    let stream = if origin.tls {
        let config = tls_config().map_err(UpstreamError::Connect)?;
        let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
            .map_err(|_| UpstreamError::Connect("bad host name".into()))?;
        let conn =
            rustls::ClientConnection::new(config, name).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    } else {
        Stream::Plain(tcp)
    };
    Ok((BufReader::with_capacity(16 * 1024, stream), socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_are_refused() {
        assert!(!allowed_address("169.254.169.254".parse().unwrap()));
        assert!(!allowed_address("fe80::1".parse().unwrap()));
        assert!(!allowed_address("fd00:ec2::254".parse().unwrap()));
        assert!(allowed_address("104.18.0.1".parse().unwrap()));
    }
}
