//! A small authoritative DNS server over UDP for fault injection: answers A records for
//! configured names, NS records for names given name servers ([`Zone::set_ns`]), NXDOMAIN for
//! unknown names, SERVFAIL or REFUSED for names configured so, and nothing at all for names
//! configured to time out.
//!
//! It is deliberately tiny (one question per query, A and NS records only, no compression in what it
//! parses, no EDNS in its answers); it runs inside a server network namespace, started by the
//! `vantage-probe serve` helper binary, and resolvers in the client namespace query it.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// DNS record type A.
const TYPE_A: u16 = 1;
/// DNS record type NS.
const TYPE_NS: u16 = 2;
/// DNS class IN.
const CLASS_IN: u16 = 1;
/// TTL of the answers: short, tests never rely on caching.
const TTL_SECS: u32 = 5;

/// What the server does for one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A records (for `A` queries; other types get an empty NOERROR answer).
    A(Vec<Ipv4Addr>),
    /// `SERVFAIL`.
    ServFail,
    /// `REFUSED`.
    Refused,
    /// No response at all: the resolver times out.
    Drop,
}

/// Response codes this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    /// `NOERROR` (0).
    NoError = 0,
    /// `SERVFAIL` (2).
    ServFail = 2,
    /// `NXDOMAIN` (3).
    NxDomain = 3,
    /// `REFUSED` (5).
    Refused = 5,
}

/// Names and what to answer for them. Names are compared case-insensitively, without a
/// trailing dot; a name not in the zone gets NXDOMAIN.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    names: HashMap<String, Answer>,
    name_servers: HashMap<String, Vec<String>>,
}

impl Zone {
    /// An empty zone: every name is NXDOMAIN.
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Sets the answer for `name`.
    pub fn set(&mut self, name: &str, answer: Answer) -> &mut Self {
        self.names.insert(normalise(name), answer);
        self
    }

    /// Gives `name` the NS records `hosts`, answered to NS queries. A name with NS records and
    /// no [`Zone::set`] answer exists: other query types get an empty NOERROR answer.
    pub fn set_ns(&mut self, name: &str, hosts: &[&str]) -> &mut Self {
        self.name_servers.insert(normalise(name), hosts.iter().map(|h| normalise(h)).collect());
        self
    }

    /// The answer for `name`, `None` when it is not in the zone.
    pub fn get(&self, name: &str) -> Option<&Answer> {
        self.names.get(&normalise(name))
    }

    /// The response to the DNS message `query`, `None` when the server stays silent (a
    /// [`Answer::Drop`] name, or bytes that are not a standard query with one question).
    pub fn respond(&self, query: &[u8]) -> Option<Vec<u8>> {
        let q = Question::parse(query)?;
        let name = normalise(&q.name);
        if let (None | Some(Answer::A(_)), Some(hosts)) =
            (self.names.get(&name), self.name_servers.get(&name))
        {
            let class_in = q.qclass == CLASS_IN;
            let (rtype, rdata) = match self.names.get(&name) {
                _ if class_in && q.qtype == TYPE_NS => {
                    (TYPE_NS, hosts.iter().map(|h| encode_name(h)).collect())
                }
                Some(Answer::A(addrs)) if class_in && q.qtype == TYPE_A => {
                    (TYPE_A, addrs.iter().map(|a| a.octets().to_vec()).collect())
                }
                _ => (TYPE_A, Vec::new()),
            };
            return Some(q.records(Rcode::NoError, rtype, &rdata));
        }
        let (rcode, addrs): (Rcode, &[Ipv4Addr]) = match self.get(&q.name) {
            None => (Rcode::NxDomain, &[]),
            Some(Answer::Drop) => return None,
            Some(Answer::ServFail) => (Rcode::ServFail, &[]),
            Some(Answer::Refused) => (Rcode::Refused, &[]),
            Some(Answer::A(addrs)) if q.qtype == TYPE_A && q.qclass == CLASS_IN => {
                (Rcode::NoError, addrs)
            }
            Some(Answer::A(_)) => (Rcode::NoError, &[]),
        };
        Some(q.response(rcode, addrs))
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` in wire format, uncompressed: length-prefixed labels and the root's zero byte.
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).expect("tests configure labels under 64 bytes"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// The parts of a query that a response needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// Query id.
    pub id: u16,
    /// The `RD` (recursion desired) bit and opcode bits of the query's flags, echoed back.
    pub flags: u16,
    /// The name asked for, dotted, as sent (without the trailing dot).
    pub name: String,
    /// The raw question section (name, type, class), echoed back.
    pub raw: Vec<u8>,
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
}

impl Question {
    /// Parses a standard query (QR=0, opcode 0) with exactly one question; `None` otherwise.
    pub fn parse(msg: &[u8]) -> Option<Question> {
        let header = msg.get(..12)?;
        let id = u16::from_be_bytes([header[0], header[1]]);
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let qdcount = u16::from_be_bytes([header[4], header[5]]);
        let is_response = flags & 0x8000 != 0;
        let opcode = (flags >> 11) & 0xF;
        if is_response || opcode != 0 || qdcount != 1 {
            return None;
        }
        let mut pos = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*msg.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            // Compression pointers (0xC0) never appear in a question that is the first name.
            if len > 63 {
                return None;
            }
            let label = msg.get(pos..pos + len)?;
            labels.push(String::from_utf8_lossy(label).into_owned());
            pos += len;
        }
        let tail = msg.get(pos..pos + 4)?;
        let qtype = u16::from_be_bytes([tail[0], tail[1]]);
        let qclass = u16::from_be_bytes([tail[2], tail[3]]);
        Some(Question {
            id,
            flags,
            name: labels.join("."),
            raw: msg[12..pos + 4].to_vec(),
            qtype,
            qclass,
        })
    }

    /// An authoritative response with `rcode` and one A record per address.
    pub fn response(&self, rcode: Rcode, addrs: &[Ipv4Addr]) -> Vec<u8> {
        let rdata: Vec<Vec<u8>> = addrs.iter().map(|a| a.octets().to_vec()).collect();
        self.records(rcode, TYPE_A, &rdata)
    }

    /// An authoritative response with `rcode` and one record of type `rtype` for the
    /// question's name per entry of `rdata`.
    fn records(&self, rcode: Rcode, rtype: u16, rdata: &[Vec<u8>]) -> Vec<u8> {
        // QR=1, opcode and RD from the query, AA=1, RA=1.
        let flags = 0x8000 | (self.flags & 0x7900) | 0x0400 | 0x0080 | rcode as u16;
        let ancount = u16::try_from(rdata.len()).expect("tests configure a handful of records");
        let mut out = Vec::with_capacity(12 + self.raw.len() + 16 * rdata.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ancount.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&self.raw);
        for data in rdata {
            let rdlength = u16::try_from(data.len()).expect("record data of a test zone is small");
            out.extend_from_slice(&0xC00Cu16.to_be_bytes()); // pointer to the question's name
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL_SECS.to_be_bytes());
            out.extend_from_slice(&rdlength.to_be_bytes());
            out.extend_from_slice(data);
        }
        out
    }
}

/// A DNS server bound to a UDP socket.
pub struct DnsServer {
    socket: UdpSocket,
    zone: Zone,
}

impl DnsServer {
    /// Binds `addr` (port 0 picks a free port).
    pub fn bind(addr: SocketAddr, zone: Zone) -> io::Result<DnsServer> {
        Ok(DnsServer { socket: UdpSocket::bind(addr)?, zone })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers queries until a socket error.
    pub fn serve(self) -> io::Error {
        let mut buf = [0u8; 1500];
        loop {
            let (len, peer) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) => return e,
            };
            if let Some(reply) = self.zone.respond(&buf[..len]) {
                if let Err(e) = self.socket.send_to(&reply, peer) {
                    return e;
                }
            }
        }
    }

    /// Serves on a background thread.
    pub fn spawn(self) -> std::thread::JoinHandle<io::Error> {
        std::thread::spawn(move || self.serve())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A query as a stub resolver sends it: id, RD, one question, and an EDNS OPT record.
    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
        for label in name.split('.') {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q.extend_from_slice(&[0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]); // OPT, 1232-byte payload
        q
    }

    fn rcode(reply: &[u8]) -> u16 {
        u16::from_be_bytes([reply[2], reply[3]]) & 0xF
    }

    fn zone() -> Zone {
        let mut zone = Zone::new();
        zone.set(
            "ok.test",
            Answer::A(vec![Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(198, 51, 100, 3)]),
        )
        .set("fail.test.", Answer::ServFail)
        .set("refused.test", Answer::Refused)
        .set("slow.test", Answer::Drop);
        zone
    }

    #[test]
    fn answers_a_records() {
        let reply = zone().respond(&query(0xBEEF, "OK.Test", TYPE_A)).unwrap();
        assert_eq!(&reply[..2], &[0xBE, 0xEF]);
        assert_eq!(rcode(&reply), 0);
        assert_eq!(u16::from_be_bytes([reply[2], reply[3]]) & 0x8500, 0x8500, "QR, AA, RD");
        assert_eq!(&reply[6..8], &[0, 2], "two answers");
        let answers = &reply[12 + "OK.Test".len() + 2 + 4..];
        assert_eq!(answers.len(), 32);
        assert_eq!(&answers[12..16], &[198, 51, 100, 2]);
        assert_eq!(&answers[28..32], &[198, 51, 100, 3]);
        // The question is echoed as sent.
        assert_eq!(&reply[13..15], b"OK");
    }

    #[test]
    fn other_types_get_an_empty_noerror() {
        let reply = zone().respond(&query(1, "ok.test", 28)).unwrap();
        assert_eq!(rcode(&reply), 0);
        assert_eq!(&reply[6..8], &[0, 0]);
    }

    #[test]
    fn failures_and_silence() {
        let z = zone();
        assert_eq!(rcode(&z.respond(&query(1, "nope.test", TYPE_A)).unwrap()), 3);
        assert_eq!(rcode(&z.respond(&query(1, "fail.test", TYPE_A)).unwrap()), 2);
        assert_eq!(rcode(&z.respond(&query(1, "refused.test", TYPE_A)).unwrap()), 5);
        assert_eq!(z.respond(&query(1, "slow.test", TYPE_A)), None);
        // Not a query: silence.
        assert_eq!(z.respond(&[0; 5]), None);
        let mut response = query(1, "ok.test", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(z.respond(&response), None);
        let mut truncated = query(1, "ok.test", TYPE_A);
        truncated.truncate(20);
        assert_eq!(z.respond(&truncated), None);
    }

    #[test]
    fn answers_ns_records() {
        let mut z = zone();
        z.set_ns("shop.test", &["ns1.dns-a.test", "NS2.dns-b.test."]);
        z.set_ns("ok.test", &["ns.dns-c.test"]);
        let reply = z.respond(&query(9, "shop.test", TYPE_NS)).unwrap();
        assert_eq!(rcode(&reply), 0);
        assert_eq!(&reply[6..8], &[0, 2], "two answers");
        let answers = &reply[12 + "shop.test".len() + 2 + 4..];
        // Pointer, type NS, class, TTL, length, then the uncompressed name.
        assert_eq!(&answers[2..4], &TYPE_NS.to_be_bytes());
        assert_eq!(&answers[10..12], &16u16.to_be_bytes());
        assert_eq!(&answers[12..28], b"\x03ns1\x05dns-a\x04test\x00");
        assert_eq!(&answers[28 + 12..28 + 28], b"\x03ns2\x05dns-b\x04test\x00");
        // A name with NS records only exists: an A query gets an empty NOERROR.
        let reply = z.respond(&query(9, "shop.test", TYPE_A)).unwrap();
        assert_eq!((rcode(&reply), &reply[6..8]), (0, &[0u8, 0][..]));
        // A name with both keeps its A records.
        let reply = z.respond(&query(9, "ok.test", TYPE_A)).unwrap();
        assert_eq!(&reply[6..8], &[0, 2]);
        let reply = z.respond(&query(9, "ok.test", TYPE_NS)).unwrap();
        assert_eq!(&reply[6..8], &[0, 1]);
        // Names without NS records are unchanged.
        assert_eq!(rcode(&z.respond(&query(1, "nope.test", TYPE_NS)).unwrap()), 3);
        assert_eq!(rcode(&z.respond(&query(1, "fail.test", TYPE_NS)).unwrap()), 2);
    }

    #[test]
    fn serves_over_udp_on_loopback() {
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), zone()).unwrap();
        let addr = server.local_addr().unwrap();
        let _thread = server.spawn();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.send_to(&query(7, "fail.test", TYPE_A), addr).unwrap();
        let mut buf = [0u8; 512];
        let (len, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..2], &[0, 7]);
        assert_eq!(rcode(&buf[..len]), 2);
    }
}
