//! Graceful upgrade: a new `sekisho serve --upgrade` waits on a Unix socket
//! in the data directory, and the running process, on SIGQUIT, passes it
//! every listening socket it has (SCM_RIGHTS) and then drains. The sockets
//! are the same kernel objects in both processes, so a connection waiting
//! in a listen queue is accepted by the new process: none is refused or
//! reset. Only the sockets cross; all state comes from the store.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags,
};

/// The most sockets one hand-over carries (two per worker, admin, demo).
const MAX_FDS: usize = 520;

/// Every listening socket of a gateway process, by role.
#[derive(Default)]
pub struct Sockets {
    pub https: Vec<TcpListener>,
    pub http: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
    pub demo: Option<TcpListener>,
}

impl Sockets {
    /// Copies of the sockets (the same kernel objects), kept to hand over.
    pub fn try_clone(&self) -> io::Result<Sockets> {
        let all = |v: &Vec<TcpListener>| v.iter().map(TcpListener::try_clone).collect::<io::Result<Vec<_>>>();
        Ok(Sockets {
            https: all(&self.https)?,
            http: all(&self.http)?,
            admin: self.admin.as_ref().map(TcpListener::try_clone).transpose()?,
            demo: self.demo.as_ref().map(TcpListener::try_clone).transpose()?,
        })
    }
}

/// In the new process: waits at `path` (up to `wait`) for the running
/// process to send its sockets.
pub fn receive(path: &Path, wait: Duration) -> io::Result<Sockets> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + wait;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let _ = std::fs::remove_file(path);
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no running gateway handed its sockets over"));
            }
            Err(e) => return Err(e),
        }
    };
    let _ = std::fs::remove_file(path);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut header = [0u8; 256];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(&stream, &mut [IoSliceMut::new(&mut header)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let counts = parse_header(header.get(..got.bytes).unwrap_or_default())?;
    split(fds, counts)
}

/// In the running process: hands the sockets to the new process waiting at `path`.
pub fn send(path: &Path, sockets: &Sockets) -> io::Result<()> {
    let stream = UnixStream::connect(path)?;
    let header = format!(
        "sekisho-handover https={} http={} admin={} demo={}\n",
        sockets.https.len(),
        sockets.http.len(),
        u8::from(sockets.admin.is_some()),
        u8::from(sockets.demo.is_some())
    );
    let fds: Vec<_> =
        sockets.https.iter().chain(&sockets.http).chain(&sockets.admin).chain(&sockets.demo).map(AsFd::as_fd).collect();
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!("{} sockets are more than a hand-over carries", fds.len())));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("the sockets do not fit one message"));
    }
    sendmsg(&stream, &[IoSlice::new(header.as_bytes())], &mut control, SendFlags::empty())?;
    Ok(())
}

struct Counts {
    https: usize,
    http: usize,
    admin: usize,
    demo: usize,
}

fn parse_header(bytes: &[u8]) -> io::Result<Counts> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not a sekisho hand-over");
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?.trim_end();
    let rest = text.strip_prefix("sekisho-handover ").ok_or_else(bad)?;
    let mut counts = Counts { https: 0, http: 0, admin: 0, demo: 0 };
    for field in rest.split(' ') {
        let (key, value) = field.split_once('=').ok_or_else(bad)?;
        let n: usize = value.parse().map_err(|_| bad())?;
        match key {
            "https" => counts.https = n,
            "http" => counts.http = n,
            "admin" => counts.admin = n,
            "demo" => counts.demo = n,
            _ => return Err(bad()),
        }
    }
    Ok(counts)
}

fn split(fds: Vec<OwnedFd>, c: Counts) -> io::Result<Sockets> {
    if fds.len() != c.https + c.http + c.admin + c.demo || c.admin > 1 || c.demo > 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the hand-over's sockets do not match its header"));
    }
    let mut fds = fds.into_iter().map(TcpListener::from);
    let https = fds.by_ref().take(c.https).collect();
    let http = fds.by_ref().take(c.http).collect();
    let admin = if c.admin == 1 { fds.next() } else { None };
    let demo = if c.demo == 1 { fds.next() } else { None };
    Ok(Sockets { https, http, admin, demo })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_cross_to_another_receiver_and_keep_accepting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgrade.sock");
        let original = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = original.local_addr().unwrap();
        let sockets = Sockets {
            http: vec![original],
            admin: Some(TcpListener::bind("127.0.0.1:0").unwrap()),
            ..Default::default()
        };
        let receiver = {
            let path = path.clone();
            std::thread::spawn(move || receive(&path, Duration::from_secs(5)))
        };
        while !path.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        send(&path, &sockets).unwrap();
        drop(sockets);
        let got = receiver.join().unwrap().unwrap();
        assert_eq!((got.https.len(), got.http.len(), got.admin.is_some(), got.demo.is_some()), (0, 1, true, false));
        assert_eq!(got.http[0].local_addr().unwrap(), addr);
        // A connection made now is accepted through the received socket.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(got.http[0].accept().is_ok());
    }

    #[test]
    fn a_stranger_on_the_socket_is_refused() {
        assert!(parse_header(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse_header(b"sekisho-handover https=1 mystery=2\n").is_err());
        let c = parse_header(b"sekisho-handover https=2 http=2 admin=1 demo=0\n").unwrap();
        assert!(split(Vec::new(), c).is_err(), "counts that do not match the sockets");
    }
}
