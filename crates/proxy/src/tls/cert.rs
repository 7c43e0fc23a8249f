//! The few X.509 fields the proxy reads from certificates — serial, subject, validity, public
//! key and DNS/URI SANs — straight from the DER, without a general X.509 library.
//!
//! Every certificate read here has already been verified by rustls/webpki (a peer's chain
//! in the handshake, an issued chain before it is used) or is a trust anchor the operator
//! configured, so this is not a validating parser: it walks the fixed layout of RFC 5280's
//! `TBSCertificate` and refuses anything that does not fit it. A general parser (x509-parser
//! and its ASN.1, OID-registry and encoding crates) cost about 0.2 MB of code, which is
//! resident in every proxy once identity is on (docs/proxy.md, "Memory").

use std::fmt::Write as _;

/// A certificate's DER does not have the expected layout.
#[derive(Debug, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct CertError(&'static str);

/// The fields of a certificate the proxy uses, borrowed from its DER.
#[derive(Debug)]
pub struct Cert<'a> {
    serial: &'a [u8],
    subject: &'a [u8],
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The whole `SubjectPublicKeyInfo` (header included).
    pub spki: &'a [u8],
    extensions: &'a [u8],
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION: u8 = 0xa0;
const EXTENSIONS: u8 = 0xa3;
const SAN_DNS: u8 = 0x82;
const SAN_URI: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element: its tag, its contents, everything after it, and the element's full
/// encoding (header included).
type Element<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn element(input: &[u8]) -> Result<Element<'_>, CertError> {
    let short = CertError("truncated element");
    let (&tag, rest) = input.split_first().ok_or(CertError("missing element"))?;
    if tag & 0x1f == 0x1f {
        return Err(CertError("multi-byte tags are not used in certificates"));
    }
    let (&first, rest) = rest.split_first().ok_or(CertError("missing length"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(CertError("unsupported length"));
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(short);
    }
    let header = input.len() - rest.len();
    Ok((tag, &rest[..len], &rest[len..], &input[..header + len]))
}

/// The contents of the element at the front of `input`, which must have tag `want`.
fn expect<'a>(input: &mut &'a [u8], want: u8, what: &'static str) -> Result<&'a [u8], CertError> {
    let (tag, value, rest, _) = element(input)?;
    if tag != want {
        return Err(CertError(what));
    }
    *input = rest;
    Ok(value)
}

impl<'a> Cert<'a> {
    /// Reads the fields from a DER certificate.
    pub fn parse(der: &'a [u8]) -> Result<Self, CertError> {
        let mut cert = der;
        let mut tbs = expect(&mut cert, SEQUENCE, "not a certificate")?;
        let mut body = expect(&mut tbs, SEQUENCE, "no TBSCertificate")?;
        if body.first() == Some(&VERSION) {
            expect(&mut body, VERSION, "bad version")?;
        }
        let serial = expect(&mut body, INTEGER, "no serial number")?;
        expect(&mut body, SEQUENCE, "no signature algorithm")?;
        expect(&mut body, SEQUENCE, "no issuer")?;
        let mut validity = expect(&mut body, SEQUENCE, "no validity")?;
        let not_before = time(&mut validity)?;
        let not_after = time(&mut validity)?;
        let (tag, subject, rest, _) = element(body)?;
        if tag != SEQUENCE {
            return Err(CertError("no subject"));
        }
        let (tag, _, mut rest, spki) = element(rest)?;
        if tag != SEQUENCE {
            return Err(CertError("no subject public key info"));
        }
        let mut extensions: &[u8] = &[];
        while !rest.is_empty() {
            let (tag, value, next, _) = element(rest)?;
            if tag == EXTENSIONS {
                let mut value = value;
                extensions = expect(&mut value, SEQUENCE, "bad extensions")?;
            }
            rest = next;
        }
        Ok(Self {
            serial,
            subject,
            not_before,
            not_after,
            spki,
            extensions,
        })
    }

    /// The serial number's DER bytes in lowercase hex (as `openssl x509 -serial`, but lower).
    pub fn serial_hex(&self) -> String {
        hex(self.serial)
    }

    /// The DNS and URI SANs, as `DNS:...` and `URI:...`, in certificate order.
    pub fn sans(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(mut names) = self.san_value() else {
            return out;
        };
        while let Ok((tag, value, rest, _)) = element(names) {
            let prefix = match tag {
                SAN_DNS => "DNS:",
                SAN_URI => "URI:",
                _ => "",
            };
            if let (false, Ok(v)) = (prefix.is_empty(), std::str::from_utf8(value)) {
                out.push(format!("{prefix}{v}"));
            }
            names = rest;
        }
        out
    }

    /// The first DNS SAN: a mesh certificate's identity.
    pub fn first_dns_name(&self) -> Option<&'a str> {
        let mut names = self.san_value()?;
        while let Ok((tag, value, rest, _)) = element(names) {
            if tag == SAN_DNS {
                return std::str::from_utf8(value).ok();
            }
            names = rest;
        }
        None
    }

    /// The GeneralNames inside the subjectAltName extension, if there is one.
    fn san_value(&self) -> Option<&'a [u8]> {
        let mut exts = self.extensions;
        while !exts.is_empty() {
            let (tag, mut ext, rest, _) = element(exts).ok()?;
            exts = rest;
            if tag != SEQUENCE || expect(&mut ext, OID, "").ok()? != OID_SAN {
                continue;
            }
            // `critical` (a BOOLEAN) may precede the value.
            let (mut tag, mut value, rest, _) = element(ext).ok()?;
            if tag != OCTET_STRING {
                (tag, value, _, _) = element(rest).ok()?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            return expect(&mut value, SEQUENCE, "").ok();
        }
        None
    }

    /// The subject as `CN=..., O=...` (short names for common attributes, dotted OIDs for
    /// the rest), for `/state`.
    pub fn subject(&self) -> String {
        let mut out = String::new();
        let mut rdns = self.subject;
        while let Ok((SET, mut set, rest, _)) = element(rdns) {
            rdns = rest;
            while let Ok((SEQUENCE, mut atv, next, _)) = element(set) {
                set = next;
                let (Ok(oid), Ok((_, value, _, _))) = (expect(&mut atv, OID, ""), element(atv))
                else {
                    continue;
                };
                if !out.is_empty() {
                    out.push_str(", ");
                }
                match attribute_name(oid) {
                    Some(name) => out.push_str(name),
                    None => out.push_str(&dotted(oid)),
                }
                out.push('=');
                out.push_str(&String::from_utf8_lossy(value));
            }
        }
        out
    }
}

fn attribute_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        _ => return None,
    })
}

fn dotted(oid: &[u8]) -> String {
    let mut out = String::new();
    let mut arc: u64 = 0;
    for b in oid {
        arc = (arc << 7) | u64::from(b & 0x7f);
        if b & 0x80 != 0 {
            continue;
        }
        if out.is_empty() {
            let (first, second) = if arc < 80 {
                (arc / 40, arc % 40)
            } else {
                (2, arc - 80)
            };
            let _ = write!(out, "{first}.{second}");
        } else {
            let _ = write!(out, ".{arc}");
        }
        arc = 0;
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A UTCTime or GeneralizedTime (`...Z`, seconds precision) as Unix seconds.
fn time(input: &mut &[u8]) -> Result<i64, CertError> {
    let (tag, value, rest, _) = element(input)?;
    *input = rest;
    let digits = value
        .strip_suffix(b"Z")
        .ok_or(CertError("validity time not in UTC"))?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(CertError("bad validity time"));
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return Err(CertError("unsupported validity time")),
    };
    let field = |i: usize| num(&rest[i..i + 2]);
    let (month, day) = (field(0), field(2));
    let (hour, minute, second) = (field(4), field(6), field(8));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(CertError("validity time out of range"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// The value of ASCII digits (checked by the caller).
fn num(digits: &[u8]) -> i64 {
    digits
        .iter()
        .fold(0, |acc, d| acc * 10 + i64::from(d - b'0'))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_rcgen_wrote() {
        let mut params = rcgen::CertificateParams::new(vec![
            "web.emojivoto.serviceaccount.identity.ferry.cluster.local".to_string(),
        ])
        .unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://cluster.local/ns/emojivoto/sa/web"
                .try_into()
                .unwrap(),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "root.cluster.local");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Ferry");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x51, 0x7a, 0xd3]));
        params.not_before = rcgen::date_time_ymd(2026, 11, 21);
        params.not_after = rcgen::date_time_ymd(2051, 2, 28);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let parsed = Cert::parse(cert.der()).unwrap();
        assert_eq!(
            parsed.sans(),
            [
                "DNS:web.emojivoto.serviceaccount.identity.ferry.cluster.local",
                "URI:spiffe://cluster.local/ns/emojivoto/sa/web"
            ]
        );
        assert_eq!(
            parsed.first_dns_name(),
            Some("web.emojivoto.serviceaccount.identity.ferry.cluster.local")
        );
        assert_eq!(parsed.subject(), "CN=root.cluster.local, O=Ferry");
        assert_eq!(parsed.serial_hex(), "517ad3");
        // 2026-11-21T00:00:00Z and 2051-02-28T00:00:00Z (GeneralizedTime past 2049).
        assert_eq!(parsed.not_before, 1_795_219_200);
        assert_eq!(parsed.not_after, 2_561_155_200);
        assert_eq!(
            parsed.spki,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
    }

    fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let body = parts.concat();
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
        }
        out.extend(body);
        out
    }

    #[test]
    fn reads_a_critical_san_and_utc_times() {
        let time = |t: &[u8]| tlv(UTC_TIME, &[t]);
        let san = tlv(
            SEQUENCE,
            &[
                &tlv(0x87, &[&[127, 0, 0, 1]]),
                &tlv(SAN_DNS, &[b"a.example"]),
            ],
        );
        let ext = tlv(
            SEQUENCE,
            &[
                &tlv(OID, &[OID_SAN]),
                &tlv(0x01, &[&[0xff]]),
                &tlv(OCTET_STRING, &[&san]),
            ],
        );
        let name = tlv(
            SEQUENCE,
            &[&tlv(
                SET,
                &[&tlv(
                    SEQUENCE,
                    &[&tlv(OID, &[&[0x55, 0x04, 0x2a]]), &tlv(0x0c, &[b"x"])],
                )],
            )],
        );
        let tbs = tlv(
            SEQUENCE,
            &[
                &tlv(VERSION, &[&tlv(INTEGER, &[&[2]])]),
                &tlv(INTEGER, &[&[0x00, 0x9a]]),
                &tlv(SEQUENCE, &[]),
                &tlv(SEQUENCE, &[]),
                &tlv(
                    SEQUENCE,
                    &[&time(b"491231235959Z"), &time(b"500101000000Z")],
                ),
                &name,
                &tlv(SEQUENCE, &[&[0u8; 200]]),
                &tlv(EXTENSIONS, &[&tlv(SEQUENCE, &[&ext])]),
            ],
        );
        let der = tlv(SEQUENCE, &[&tbs, &tlv(SEQUENCE, &[]), &tlv(0x03, &[&[0]])]);
        let cert = Cert::parse(&der).unwrap();
        assert_eq!(cert.sans(), ["DNS:a.example"]);
        assert_eq!(cert.first_dns_name(), Some("a.example"));
        assert_eq!(cert.serial_hex(), "009a");
        assert_eq!(cert.subject(), "2.5.4.42=x");
        // UTCTime years 49 and 50 are 2049 and 1950 (RFC 5280 4.1.2.5.1).
        assert_eq!(cert.not_before, 2_524_607_999);
        assert_eq!(cert.not_after, -631_152_000);
        assert_eq!(cert.spki.len(), 204);
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        assert!(Cert::parse(b"").is_err());
        assert!(Cert::parse(&[0x30, 0x82, 0xff]).is_err());
        assert!(Cert::parse(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_err());
    }

    #[test]
    fn names_unknown_attributes_by_oid() {
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(dotted(&[0x55, 0x04, 0x03]), "2.5.4.3");
    }
}
