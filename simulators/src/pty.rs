//! A null-modem cable made of two pseudo-terminals, like `socat pty pty`: bytes
//! written to one end's path come out of the other's. The simulator's RTU server opens
//! one end, the driver under test opens the other as it would open `/dev/ttyUSB0`.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use nix::unistd::ttyname;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct PtyLink {
    device_path: PathBuf,
    client_path: PathBuf,
    // Held open so the masters never see "no slave" (EIO) while nobody has a path open.
    _slaves: [OwnedFd; 2],
    bridge: JoinHandle<()>,
}

impl PtyLink {
    /// Opens both terminals in raw mode and starts copying between them. Call from
    /// within a tokio runtime; the link lives until dropped.
    pub fn new() -> io::Result<PtyLink> {
        let (device_master, device_slave, device_path) = open_raw_pty()?;
        let (client_master, client_slave, client_path) = open_raw_pty()?;
        let mut device_end = PtyMaster::new(device_master)?;
        let mut client_end = PtyMaster::new(client_master)?;
        let bridge = tokio::spawn(async move {
            let result = tokio::io::copy_bidirectional(&mut device_end, &mut client_end).await;
            tracing::debug!(?result, "pty link closed");
        });
        Ok(PtyLink {
            device_path,
            client_path,
            _slaves: [device_slave, client_slave],
            bridge,
        })
    }

    /// The end for the simulated devices (their RTU server opens it).
    pub fn device_path(&self) -> &Path {
        &self.device_path
    }

    /// The end for the client, as it would open a real serial adapter.
    pub fn client_path(&self) -> &Path {
        &self.client_path
    }
}

impl Drop for PtyLink {
    fn drop(&mut self) {
        self.bridge.abort();
    }
}

/// A pty pair with the terminal side in raw mode (no echo, no line editing, no
/// newline translation: a serial line carries binary frames).
fn open_raw_pty() -> io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    let pty = openpty(None, None)?;
    let mut termios = tcgetattr(&pty.slave)?;
    cfmakeraw(&mut termios);
    tcsetattr(&pty.slave, SetArg::TCSANOW, &termios)?;
    let path = ttyname(&pty.slave)?;
    Ok((pty.master, pty.slave, path))
}

/// The master side of a pty as a tokio byte stream.
#[derive(Debug)]
struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    fn new(fd: OwnedFd) -> io::Result<PtyMaster> {
        fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and is not
        // reused for as long as it is registered.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(PtyMaster { fd })
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), unfilled)?));
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), buf)?)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
