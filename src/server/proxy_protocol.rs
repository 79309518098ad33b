//! The PROXY protocol header (versions 1 and 2) a balancer sends before the
//! connection's first byte, naming the client it accepted the connection from.
//!
//! Read as the bytes arrive, not a byte at a time: what arrives after the
//! header belongs to HTTP (or TLS) and is handed back to be read first.

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version and command, family, and the length of the rest.
const V2_FIXED: usize = 16;
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, CRLF included (the specification's 107).
const V1_LONGEST: usize = 107;

/// Reads the header and returns the client address it names, or `None` when
/// it names none (a balancer's own health check: v2 `LOCAL`, v1 `UNKNOWN`,
/// or a unix address), in which case the connection's peer stands; and the
/// bytes read past the header.
pub(super) async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> io::Result<(Option<SocketAddr>, Bytes)> {
    let mut buf = BytesMut::new();
    loop {
        if let Some((client, len)) = parse(&buf)? {
            return Ok((client, buf.split_off(len).freeze()));
        }
        // Room for a read of some size: a version 2 header may be 64 KiB.
        buf.reserve(512);
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The client a whole header at the start of `buf` names and the header's
/// length, or `None` while the header may still be coming.
fn parse(buf: &[u8]) -> io::Result<Option<(Option<SocketAddr>, usize)>> {
    let starts = |prefix: &[u8]| prefix.starts_with(&buf[..buf.len().min(prefix.len())]);
    if starts(V2_SIGNATURE) {
        let Some(&[high, low]) = buf.get(V2_FIXED - 2..V2_FIXED) else {
            return Ok(None);
        };
        let len = V2_FIXED + usize::from(u16::from_be_bytes([high, low]));
        let Some(header) = buf.get(..len) else {
            return Ok(None);
        };
        let parsed = v2::Header::try_from(header).map_err(invalid)?;
        check_tlvs(header, &parsed)?;
        let client = match (parsed.command, parsed.addresses) {
            (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        };
        return Ok(Some((client, len)));
    }
    if !starts(V1_PREFIX) {
        return Err(invalid("no PROXY protocol header"));
    }
    let seen = &buf[..buf.len().min(V1_LONGEST)];
    let Some(end) = seen.windows(2).position(|w| w == b"\r\n") else {
        return match seen.len() {
            V1_LONGEST => Err(invalid("PROXY protocol header longer than 107 bytes")),
            _ => Ok(None),
        };
    };
    let len = end + 2;
    let header = v1::Header::try_from(&buf[..len]).map_err(invalid)?;
    let client = match header.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    };
    Ok(Some((client, len)))
}

/// Every TLV after a version 2 header's addresses whole, and its CRC32C, if it
/// has one, the header's own (the specification's receiver MUST when it checks
/// one; HAProxy checks it): what does not hold is a header to refuse, not one
/// to take the client's address from.
fn check_tlvs(bytes: &[u8], header: &v2::Header<'_>) -> io::Result<()> {
    const CRC32C: u8 = 0x03;
    let mut at = bytes.len() - usize::from(header.tlvs().len());
    for tlv in header.tlvs() {
        let tlv = tlv.map_err(invalid)?;
        let value_at = at + 3;
        at = value_at + tlv.value.len();
        if tlv.kind != CRC32C {
            continue;
        }
        let said: [u8; 4] = tlv.value[..]
            .try_into()
            .map_err(|_| invalid("PROXY protocol CRC32C not 4 bytes"))?;
        // The header's checksum with the checksum's own bytes taken as zeros.
        let crc = crc32c::crc32c(&bytes[..value_at]);
        let crc = crc32c::crc32c_append(crc, &[0; 4]);
        let crc = crc32c::crc32c_append(crc, &bytes[at..]);
        if crc != u32::from_be_bytes(said) {
            return Err(invalid("PROXY protocol header fails its CRC32C"));
        }
    }
    Ok(())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::read_header;

    /// The client `bytes` name, each header followed by `GET`, which must
    /// come back as the bytes past the header, whether the header arrives at
    /// once or a byte at a time.
    async fn read(bytes: &[u8]) -> Result<Option<String>, String> {
        let mut io = bytes;
        let (addr, rest) = read_header(&mut io).await.map_err(|e| e.to_string())?;
        assert_eq!([&rest[..], io].concat(), b"GET", "{bytes:?}");
        let (mut writer, mut reader) = tokio::io::duplex(1);
        let sent = bytes.to_vec();
        tokio::spawn(async move { writer.write_all(&sent).await });
        let (in_pieces, rest) = read_header(&mut reader).await.unwrap();
        let mut after = rest.to_vec();
        reader.read_to_end(&mut after).await.unwrap();
        assert_eq!((in_pieces, &after[..]), (addr, &b"GET"[..]), "{bytes:?}");
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
        // What follows UNKNOWN is ignored, as the specification says.
        assert_eq!(read(&v1("PROXY UNKNOWN ::1 ::1 1 2\r\n")).await, Ok(None));
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
        // With a TLV after the addresses (a NOOP of two bytes).
        let with_tlv = [&ipv4[..], &[0x04, 0, 2, 0, 0]].concat();
        assert_eq!(
            read(&v2(0x21, 0x11, &with_tlv)).await,
            Ok(Some("203.0.113.7:51234".into()))
        );
        // A header longer than any first read: 3,000 bytes of NOOP.
        let long = [&ipv4[..], &[0x04, 0x0B, 0xB8], &[0; 3000]].concat();
        assert_eq!(
            read(&v2(0x21, 0x11, &long)).await,
            Ok(Some("203.0.113.7:51234".into()))
        );
        // LOCAL: the balancer's own connection (a health check).
        assert_eq!(read(&v2(0x20, 0x00, &[])).await, Ok(None));
        // A CRC32C of the header, as HAProxy's `proxy-v2-options crc32c` sends it.
        let mut checked = v2(0x21, 0x11, &[&ipv4[..], &[0x03, 0, 4, 0, 0, 0, 0]].concat());
        let crc = crc32c::crc32c(&checked[..checked.len() - 3]).to_be_bytes();
        let at = checked.len() - 7;
        checked[at..at + 4].copy_from_slice(&crc);
        assert_eq!(read(&checked).await, Ok(Some("203.0.113.7:51234".into())));
        checked[at] ^= 1;
        assert!(read_header(&mut &checked[..]).await.is_err());
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            &[b'P'; 200][..],
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0C\x01",
            // A TLV whose length runs past the header's end.
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x10\xcb\0\x71\x07\x0a\0\0\x01\xc8\x22\0\x50\x04\0\x09\0",
        ] {
            let mut io = bad;
            assert!(read_header(&mut io).await.is_err(), "{bad:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120], b"\r\n"].concat();
        assert!(read_header(&mut long.as_slice()).await.is_err());
    }
}
