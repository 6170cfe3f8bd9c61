//! What the built-in server answers: one pure function from (zone, records, query) to response.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use crate::names::txt_strings;

/// The largest UDP answer we send (the DNS flag day 2020 value, safe from fragmentation).
pub(super) const MAX_UDP_PAYLOAD: u16 = 1232;

/// The zone's fixed facts, from the settings.
pub(super) struct ZoneInfo {
    /// The apex, lower-cased.
    pub origin: LowerName,
    /// Name servers; the first is the SOA's MNAME.
    pub ns: Vec<Name>,
    /// The SOA's contact mailbox in DNS form.
    pub rname: Name,
    /// TTL of everything, and the negative TTL.
    pub ttl: u32,
}

/// One published version of the zone's records.
#[derive(Clone, Default)]
pub(super) struct Records {
    /// The SOA serial; bumped on every change.
    pub serial: u32,
    /// Owner name → its records. Names with no records are absent.
    pub nodes: HashMap<LowerName, Node>,
}

/// The records at one name.
#[derive(Clone, Default, PartialEq, Debug)]
pub(super) struct Node {
    /// A and AAAA, sorted and without duplicates.
    pub addrs: Vec<IpAddr>,
    /// TXT values in the order they were added, without duplicates.
    pub txt: Vec<String>,
}

impl Node {
    /// A node holding exactly `addrs` (sorted, deduplicated).
    pub fn with_addrs(addrs: &[IpAddr]) -> Self {
        let mut addrs = addrs.to_vec();
        addrs.sort();
        addrs.dedup();
        Self {
            addrs,
            txt: Vec::new(),
        }
    }

    /// True when nothing is published at this name.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty() && self.txt.is_empty()
    }

    /// This node's records of `qtype` (all of them for ANY), owned by `owner`.
    fn records(&self, owner: &Name, qtype: RecordType, ttl: u32) -> Vec<Record> {
        let any = qtype == RecordType::ANY;
        let mut out = Vec::new();
        for ip in &self.addrs {
            let data = match ip {
                IpAddr::V4(v4) if any || qtype == RecordType::A => RData::A(A(*v4)),
                IpAddr::V6(v6) if any || qtype == RecordType::AAAA => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            out.push(Record::from_rdata(owner.clone(), ttl, data));
        }
        if any || qtype == RecordType::TXT {
            for value in &self.txt {
                let data = RData::TXT(TXT::from_bytes(txt_strings(value)));
                out.push(Record::from_rdata(owner.clone(), ttl, data));
            }
        }
        out
    }
}

/// Where a query name landed in the zone.
enum Found<'a> {
    /// The name exists; `None` for the apex or an empty non-terminal without records.
    Name(Option<&'a Node>),
    /// The name does not exist but a wildcard at its closest encloser covers it.
    Wildcard(&'a Node),
    /// Nothing at or below the name.
    NxDomain,
}

impl ZoneInfo {
    fn soa(&self, serial: u32) -> Record {
        let mname = self
            .ns
            .first()
            .cloned()
            .unwrap_or_else(|| self.origin.clone().into());
        let soa = SOA::new(
            mname,
            self.rname.clone(),
            serial,
            3600,      // refresh
            600,       // retry
            1_209_600, // expire: two weeks
            self.ttl,  // negative-caching TTL
        );
        Record::from_rdata(self.origin.clone().into(), self.ttl, RData::SOA(soa))
    }

    fn ns_records(&self) -> Vec<Record> {
        let apex: Name = self.origin.clone().into();
        let ttl = self.ttl;
        self.ns
            .iter()
            .map(|ns| Record::from_rdata(apex.clone(), ttl, RData::NS(NS(ns.clone()))))
            .collect()
    }

    /// A name exists if it is the apex, holds records, or has a descendant that does
    /// (an "empty non-terminal", RFC 8020: `x.zone` when only `_acme-challenge.x.zone` is set).
    fn exists(&self, records: &Records, name: &LowerName) -> bool {
        *name == self.origin
            || records.nodes.contains_key(name)
            || records.nodes.keys().any(|k| name.zone_of(k))
    }

    fn find<'a>(&self, records: &'a Records, qname: &LowerName) -> Found<'a> {
        if let Some(node) = records.nodes.get(qname) {
            return Found::Name(Some(node));
        }
        if self.exists(records, qname) {
            return Found::Name(None);
        }
        // RFC 4592: only a wildcard directly below the closest encloser applies.
        let mut encloser = qname.base_name();
        while self.origin.zone_of(&encloser) {
            if self.exists(records, &encloser) {
                let wildcard = Name::from(&encloser).prepend_label("*").ok();
                return match wildcard.and_then(|w| records.nodes.get(&LowerName::new(&w))) {
                    Some(node) => Found::Wildcard(node),
                    None => Found::NxDomain,
                };
            }
            encloser = encloser.base_name();
        }
        Found::NxDomain
    }
}

/// Answers `request` from `records`. Never fails: problems become response codes.
pub(super) fn respond(zone: &ZoneInfo, records: &Records, request: &Message) -> Message {
    let mut response = Message::response(request.id, request.op_code);
    response.metadata.recursion_desired = request.recursion_desired;
    response.metadata.checking_disabled = request.checking_disabled;
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    if request.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response;
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    response.add_query(query.clone());

    let qname = LowerName::new(&query.name);
    let qtype = query.query_type();
    if !zone.origin.zone_of(&qname)
        || !matches!(query.query_class, DNSClass::IN | DNSClass::ANY)
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
    {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    }
    response.metadata.authoritative = true;
    answer_in_zone(zone, records, query, &qname, &mut response);
    response
}

fn answer_in_zone(
    zone: &ZoneInfo,
    records: &Records,
    query: &Query,
    qname: &LowerName,
    response: &mut Message,
) {
    let qtype = query.query_type();
    // Answers carry the owner name as asked (case preserved, for 0x20 randomisation).
    let owner = &query.name;
    let mut answers = match zone.find(records, qname) {
        Found::NxDomain => {
            response.metadata.response_code = ResponseCode::NXDomain;
            response.add_authority(zone.soa(records.serial));
            return;
        }
        Found::Name(node) => node
            .map(|n| n.records(owner, qtype, zone.ttl))
            .unwrap_or_default(),
        Found::Wildcard(node) => node.records(owner, qtype, zone.ttl),
    };

    let mut glue_for_ns = false;
    if *qname == zone.origin {
        let any = qtype == RecordType::ANY;
        if any || qtype == RecordType::SOA {
            answers.insert(0, zone.soa(records.serial));
        }
        if any || qtype == RecordType::NS {
            answers.extend(zone.ns_records());
            glue_for_ns = true;
        }
    }

    if answers.is_empty() {
        // NODATA: the name exists, not with this type.
        response.add_authority(zone.soa(records.serial));
        return;
    }
    response.add_answers(answers);
    if glue_for_ns {
        add_glue(zone, records, response);
    }
}

/// Addresses of in-zone name servers, so resolvers need not ask again.
fn add_glue(zone: &ZoneInfo, records: &Records, response: &mut Message) {
    for ns in &zone.ns {
        if let Some(node) = records.nodes.get(&LowerName::new(ns)) {
            response.add_additionals(node.records(ns, RecordType::A, zone.ttl));
            response.add_additionals(node.records(ns, RecordType::AAAA, zone.ttl));
        }
    }
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
