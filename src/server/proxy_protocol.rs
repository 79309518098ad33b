//! The PROXY protocol header (versions 1 and 2) a balancer sends before the
//! connection's first byte, naming the client it accepted the connection from.
//!
//! Read exactly, never past the header: what follows belongs to HTTP (or TLS).

use std::io;
use std::net::SocketAddr;

use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// "PROXY UNKNOWN\r\n", the shortest version 1 header.
const V1_SHORTEST: usize = 15;
/// The longest version 1 header, CRLF included (the specification's 107).
const V1_LONGEST: usize = 107;

/// Reads the header and returns the client address it names, or `None` when
/// it names none (a balancer's own health check: v2 `LOCAL`, v1 `UNKNOWN`,
/// or a unix address), in which case the connection's peer stands.
pub(super) async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> io::Result<Option<SocketAddr>> {
    let mut head = vec![0; V1_SHORTEST];
    io.read_exact(&mut head).await?;
    if head.starts_with(V2_SIGNATURE) {
        // Signature, version and command, family, then the length of the rest.
        head.resize(16, 0);
        io.read_exact(&mut head[V1_SHORTEST..]).await?;
        let rest = usize::from(u16::from_be_bytes([head[14], head[15]]));
        head.resize(16 + rest, 0);
        io.read_exact(&mut head[16..]).await?;
        let header = v2::Header::try_from(head.as_slice()).map_err(invalid)?;
        return Ok(match (header.command, header.addresses) {
            (v2::Command::Local, _) => None,
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, _) => None,
        });
    }
    if !head.starts_with(b"PROXY ") {
        return Err(invalid("no PROXY protocol header"));
    }
    while !head.ends_with(b"\r\n") {
        if head.len() == V1_LONGEST {
            return Err(invalid("PROXY protocol header longer than 107 bytes"));
        }
        head.push(io.read_u8().await?);
    }
    let header = v1::Header::try_from(head.as_slice()).map_err(invalid)?;
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    })
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::read_header;

    async fn read(bytes: &[u8]) -> Result<Option<String>, String> {
        let mut io = bytes;
        let addr = read_header(&mut io).await.map_err(|e| e.to_string())?;
        // Never past the header.
        assert_eq!(io, b"GET", "{bytes:?}");
        Ok(addr.map(|a| a.to_string()))
    }

    #[tokio::test]
    async fn versions_one_and_two() {
        let v1 = |s: &str| [s.as_bytes(), b"GET"].concat();
        assert_eq!(
            read(&v1("PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n")).await,
            Ok(Some("203.0.113.7:51234".into()))
        );
        assert_eq!(
            read(&v1("PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n")).await,
            Ok(Some("[2001:db8::7]:51234".into()))
        );
        assert_eq!(read(&v1("PROXY UNKNOWN\r\n")).await, Ok(None));
        let v2 = |command: u8, family: u8, addresses: &[u8]| {
            let len = u16::try_from(addresses.len()).unwrap().to_be_bytes();
            [
                b"\r\n\r\n\0\r\nQUIT\n",
                &[command, family][..],
                &len,
                addresses,
                b"GET",
            ]
            .concat()
        };
        let ipv4 = [203, 0, 113, 7, 10, 0, 0, 1, 0xC8, 0x22, 0, 80];
        assert_eq!(
            read(&v2(0x21, 0x11, &ipv4)).await,
            Ok(Some("203.0.113.7:51234".into()))
        );
        // LOCAL: the balancer's own connection (a health check).
        assert_eq!(read(&v2(0x20, 0x00, &[])).await, Ok(None));
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            &[b'P'; 200][..],
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0C\x01",
        ] {
            let mut io = bad;
            assert!(read_header(&mut io).await.is_err(), "{bad:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120], b"\r\n"].concat();
        assert!(read_header(&mut long.as_slice()).await.is_err());
    }
}
