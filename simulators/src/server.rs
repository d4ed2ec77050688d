//! Serving devices over Modbus TCP and RTU, with faults applied on the way.
//!
//! Every connection gets its own `Dispatch` service, but the devices inside are
//! shared handles: all connections see, and change, the same state.

use std::future::{ready, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::task::JoinHandle;
use tokio_modbus::server::{rtu, tcp, Service};
use tokio_modbus::{ExceptionCode, Response, SlaveRequest};
use tokio_serial::{SerialPortBuilder, SerialStream};

use crate::device::AnyDevice;
use crate::faults::Outcome;

/// How the requests reach the devices, which decides what "no such unit" and "close
/// the connection" mean.
#[derive(Debug, Clone)]
enum Link {
    /// A TCP connection: an unknown unit id gets exception 0x0B, as from a gateway;
    /// closing sets the flag its [`ClosableStream`] watches.
    Tcp { closed: Arc<AtomicBool> },
    /// A multi-drop serial bus: a request for another address is none of our business,
    /// and there is no connection to close, so both mean silence.
    RtuBus,
}

/// The Modbus service of one connection: finds the addressed device, applies its
/// faults, lets it answer.
#[derive(Debug, Clone)]
struct Dispatch {
    devices: Arc<[AnyDevice]>,
    link: Link,
}

type Answer = Result<Option<Response>, ExceptionCode>;

impl Service for Dispatch {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let device = self.devices.iter().find(|d| d.unit_id() == req.slave);
        let Some(device) = device.cloned() else {
            let answer = match self.link {
                Link::Tcp { .. } => Err(ExceptionCode::GatewayTargetDevice),
                Link::RtuBus => Ok(None),
            };
            return Box::pin(ready(answer));
        };
        let plan = device.faults().plan();
        let link = self.link.clone();
        Box::pin(async move {
            if !plan.latency.is_zero() {
                tokio::time::sleep(plan.latency).await;
            }
            match plan.outcome {
                Outcome::Answer => device.handle(&req.request).map(Some),
                Outcome::DropReply => {
                    // Processed, answer lost: whatever the device said does not matter.
                    let _ = device.handle(&req.request);
                    Ok(None)
                }
                Outcome::DropRequest => Ok(None),
                Outcome::Close => {
                    if let Link::Tcp { closed } = link {
                        closed.store(true, Ordering::SeqCst);
                    }
                    Ok(None)
                }
                Outcome::Exception(code) => Err(code),
            }
        })
    }
}

/// A TCP stream the service can close. tokio-modbus owns the stream and only stops a
/// connection on end of input, so once the flag is set the stream reports end of
/// input (and refuses writes); the server then drops it, which closes the socket.
#[derive(Debug)]
struct ClosableStream {
    inner: TcpStream,
    closed: Arc<AtomicBool>,
}

impl ClosableStream {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl AsyncRead for ClosableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_closed() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClosableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_closed() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A running server. Dropping it (or [`Server::stop`]) stops it and its connections.
#[derive(Debug)]
pub struct Server {
    task: JoinHandle<()>,
}

impl Server {
    pub async fn stop(mut self) {
        self.task.abort();
        // Wait for the task to be gone; its result (cancelled) says nothing more.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A running TCP server and the address it listens on.
#[derive(Debug)]
pub struct TcpServer {
    local_addr: SocketAddr,
    server: Server,
}

impl TcpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// Serves one device on Modbus TCP. Bind `127.0.0.1:0` and read
/// [`TcpServer::local_addr`] to get a free port.
pub async fn serve_tcp(
    device: impl Into<AnyDevice>,
    addr: impl ToSocketAddrs,
) -> io::Result<TcpServer> {
    serve_tcp_units(vec![device.into()], addr).await
}

/// Serves several devices on one TCP port, told apart by unit id, like a TCP-to-RTU
/// gateway with devices behind it.
pub async fn serve_tcp_units(
    devices: Vec<AnyDevice>,
    addr: impl ToSocketAddrs,
) -> io::Result<TcpServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let devices: Arc<[AnyDevice]> = devices.into();
    let task = tokio::spawn(async move {
        let on_connected = |stream: TcpStream, peer: SocketAddr| {
            let devices = Arc::clone(&devices);
            async move {
                // An offline device accepts nothing: the connection closes at once.
                if devices.iter().all(|d| d.faults().is_offline()) {
                    tracing::debug!(%peer, "offline: closing new connection");
                    return Ok(None);
                }
                let closed = Arc::new(AtomicBool::new(false));
                let link = Link::Tcp {
                    closed: Arc::clone(&closed),
                };
                let stream = ClosableStream {
                    inner: stream,
                    closed,
                };
                Ok(Some((Dispatch { devices, link }, stream)))
            }
        };
        let on_error = |err: io::Error| tracing::debug!(%err, "connection ended");
        if let Err(err) = tcp::Server::new(listener)
            .serve(&on_connected, on_error)
            .await
        {
            tracing::warn!(%err, %local_addr, "TCP server stopped");
        }
    });
    Ok(TcpServer {
        local_addr,
        server: Server { task },
    })
}

/// Serves devices on one serial line (RTU multi-drop), each answering its own address.
/// `port` is what a real device would be wired to, e.g. one end of a
/// [`crate::pty::PtyLink`]. The port is opened before this returns.
pub fn serve_rtu(
    port: SerialPortBuilder,
    devices: impl IntoIterator<Item = AnyDevice>,
) -> io::Result<Server> {
    let dispatch = Dispatch {
        devices: devices.into_iter().collect::<Vec<_>>().into(),
        link: Link::RtuBus,
    };
    let mut serial = Some(SerialStream::open(&port)?);
    let task = tokio::spawn(async move {
        // tokio-modbus gives up on a line after too much noise; a device would not,
        // so reopen the port and go on.
        loop {
            let stream = match serial.take() {
                Some(stream) => Ok(stream),
                None => SerialStream::open(&port),
            };
            match stream {
                Ok(stream) => {
                    let result = rtu::Server::new(stream)
                        .serve_forever(dispatch.clone())
                        .await;
                    tracing::debug!(?result, port = ?port, "RTU line interrupted");
                }
                Err(err) => tracing::warn!(%err, port = ?port, "cannot reopen RTU port"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Ok(Server { task })
}
