//! Echo server on tokio-tungstenite over tokio-rustls: the TLS counterpart of
//! `tokio-tungstenite-echo` (same echo: every text or binary message read is forwarded to the
//! sink), with rustls on the ring provider and ALPN http/1.1, as Sockeye's feature `tls`. One
//! current-thread runtime, like Sockeye's echo example with one worker.
//!
//! `tokio-tungstenite-rustls-echo 127.0.0.1:9004 CHAIN.pem KEY.pem`

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{future, StreamExt, TryStreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

async fn echo(acceptor: TlsAcceptor, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(ws) = tokio_tungstenite::accept_async(tls).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|msg| future::ready(msg.is_text() || msg.is_binary()))
        .forward(write)
        .await;
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

#[allow(deprecated)] // ring's provider: no post-quantum key exchange, as Sockeye's.
fn acceptor(chain: &str, key: &str) -> std::io::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(chain)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("{chain}: {e}")))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(format!("{key}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| invalid(format!("TLS config: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9004".into())
        .parse()
        .map_err(|e| invalid(format!("bad address: {e}")))?;
    let chain = args.next().ok_or_else(|| invalid("no CHAIN.pem".into()))?;
    let key = args.next().ok_or_else(|| invalid("no KEY.pem".into()))?;
    let acceptor = acceptor(&chain, &key)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!(
            "tokio-tungstenite + tokio-rustls echo server listening on wss://{}",
            listener.local_addr()?
        );
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(echo(acceptor.clone(), stream));
                }
                Err(e) => eprintln!("accept failed: {e}"),
            }
        }
    })
}
