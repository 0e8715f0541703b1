//! The server name (SNI, RFC 6066 section 3) of a TLS ClientHello, parsed
//! with rusticata's `tls-parser`.
//!
//! The datapath hands over a TCP segment's first bytes; a ClientHello may
//! be longer (browsers with post-quantum key shares send about 1.8 KB, two
//! segments). A whole ClientHello is parsed as a record; a cut one is read
//! up to its cut: its fixed fields, then its extensions one by one, so that
//! a server name before the cut is still found.

use tls_parser::{
    parse_tls_client_hello_extension, parse_tls_client_hello_extensions,
    parse_tls_handshake_client_hello, parse_tls_plaintext, parse_tls_record_header, SNIType,
    TlsExtension, TlsMessage, TlsMessageHandshake, TlsRecordType,
};

use crate::addrset::names::normalize;

/// Bytes of a handshake message's header: type (1) and length (3), RFC
/// 8446 section 4.
const HANDSHAKE_HEADER: usize = 4;

/// Why a payload gave no name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// Not a TLS record holding a ClientHello.
    #[error("not a TLS ClientHello")]
    NotClientHello,
}

/// The host name a ClientHello asks for (normalised), `None` without one
/// (a client connecting by address, or encrypted ClientHello).
///
/// # Errors
/// [`TlsError::NotClientHello`] when the payload is not one.
pub fn server_name(payload: &[u8]) -> Result<Option<String>, TlsError> {
    let exts: Vec<TlsExtension> = match parse_tls_plaintext(payload) {
        Ok((_, rec)) => {
            let hello = rec.msg.iter().find_map(|m| match m {
                TlsMessage::Handshake(TlsMessageHandshake::ClientHello(h)) => Some(h),
                _ => None,
            });
            let hello = hello.ok_or(TlsError::NotClientHello)?;
            match hello.ext {
                Some(ext) => parse_tls_client_hello_extensions(ext)
                    .map(|(_, v)| v)
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        }
        Err(_) => cut_extensions(payload)?,
    };
    Ok(exts.iter().find_map(|e| match e {
        TlsExtension::SNI(names) => names
            .iter()
            .find(|(t, _)| *t == SNIType::HostName)
            .and_then(|(_, n)| std::str::from_utf8(n).ok())
            .map(normalize),
        _ => None,
    }))
}

/// The extensions of a ClientHello cut before its record's end: those
/// complete before the cut.
fn cut_extensions(payload: &[u8]) -> Result<Vec<TlsExtension<'_>>, TlsError> {
    let (body, hdr) = parse_tls_record_header(payload).map_err(|_| TlsError::NotClientHello)?;
    if hdr.record_type != TlsRecordType::Handshake || body.first() != Some(&1) {
        return Err(TlsError::NotClientHello);
    }
    let hello = body
        .get(HANDSHAKE_HEADER..)
        .ok_or(TlsError::NotClientHello)?;
    let (rest, ch) =
        parse_tls_handshake_client_hello(hello).map_err(|_| TlsError::NotClientHello)?;
    if let Some(ext) = ch.ext {
        return Ok(parse_tls_client_hello_extensions(ext)
            .map(|(_, v)| v)
            .unwrap_or_default());
    }
    // The extensions' length (2 bytes) promises more than there is.
    let mut i = rest.get(2..).unwrap_or_default();
    let mut out = Vec::new();
    while let Ok((next, e)) = parse_tls_client_hello_extension(i) {
        out.push(e);
        i = next;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS 1.2-style ClientHello record naming `sni`, with `pad` bytes of
    /// a padding extension (21) before the SNI extension.
    pub(crate) fn client_hello(sni: &str, pad: usize) -> Vec<u8> {
        let mut ext = Vec::new();
        if pad > 0 {
            ext.extend_from_slice(&21u16.to_be_bytes());
            ext.extend_from_slice(&(pad as u16).to_be_bytes());
            ext.extend(std::iter::repeat_n(0u8, pad));
        }
        let name = sni.as_bytes();
        ext.extend_from_slice(&0u16.to_be_bytes()); // server_name
        ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        ext.push(0); // host_name
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn server_names_whole_and_cut() {
        let ch = client_hello("Contoso.US.Portal.CloudAppSecurity.com", 0);
        assert_eq!(
            server_name(&ch).unwrap().as_deref(),
            Some("contoso.us.portal.cloudappsecurity.com")
        );
        // A record cut after its SNI extension (padding follows it here).
        let mut long = client_hello("ocsp.msocsp.com", 0);
        let extra = 600;
        // Grow the lengths as if 600 more bytes of extensions followed.
        let rec_len = u16::from_be_bytes([long[3], long[4]]) as usize + extra;
        long[3..5].copy_from_slice(&(rec_len as u16).to_be_bytes());
        let hs_len = rec_len - 4;
        long[6..9].copy_from_slice(&(hs_len as u32).to_be_bytes()[1..]);
        let ext_at = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        let ext_len = u16::from_be_bytes([long[ext_at], long[ext_at + 1]]) as usize + extra;
        long[ext_at..ext_at + 2].copy_from_slice(&(ext_len as u16).to_be_bytes());
        assert_eq!(
            server_name(&long).unwrap().as_deref(),
            Some("ocsp.msocsp.com")
        );
        // A cut inside the SNI extension: no name, but still a ClientHello.
        let padded = client_hello("portal.cloudappsecurity.com", 400);
        assert_eq!(server_name(&padded[..450]).unwrap(), None);
        assert_eq!(
            server_name(b"GET / HTTP/1.1\r\n"),
            Err(TlsError::NotClientHello)
        );
        assert_eq!(
            server_name(&[22, 3, 1, 0, 5, 2, 0]),
            Err(TlsError::NotClientHello)
        );
    }
}
