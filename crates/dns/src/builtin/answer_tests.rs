//! Unit tests of the answering logic, without sockets.

use super::*;
use crate::names::parse_name;

fn zone() -> ZoneInfo {
    ZoneInfo {
        origin: LowerName::new(&parse_name("t.example").expect("name")),
        ns: vec![
            parse_name("ns1.t.example").expect("name"),
            parse_name("ns.other.example").expect("name"),
        ],
        rname: parse_name("hostmaster.t.example").expect("name"),
        ttl: 30,
    }
}

fn records(entries: &[(&str, Node)]) -> Records {
    Records {
        serial: 7,
        nodes: entries
            .iter()
            .map(|(n, node)| (LowerName::new(&parse_name(n).expect("name")), node.clone()))
            .collect(),
    }
}

fn addrs(ips: &[&str]) -> Node {
    let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().expect("ip")).collect();
    Node::with_addrs(&ips)
}

fn ask(records: &Records, name: &str, qtype: RecordType) -> Message {
    let mut request = Message::query();
    request.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    respond(&zone(), records, &request)
}

fn soa_in_authority(m: &Message) -> bool {
    m.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

#[test]
fn addresses_and_case_insensitive_names() {
    let recs = records(&[("a.t.example", addrs(&["192.0.2.1", "2001:db8::1"]))]);
    let m = ask(&recs, "A.T.Example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "A.T.Example.",
        "owner as asked"
    );
    let m = ask(&recs, "a.t.example.", RecordType::AAAA);
    assert_eq!(m.answers.len(), 1);
    let m = ask(&recs, "a.t.example.", RecordType::ANY);
    assert_eq!(m.answers.len(), 2);
}

#[test]
fn nodata_and_nxdomain_carry_the_soa() {
    let recs = records(&[("a.t.example", addrs(&["192.0.2.1"]))]);
    let m = ask(&recs, "a.t.example.", RecordType::MX);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && soa_in_authority(&m) && m.authoritative);
    let m = ask(&recs, "b.t.example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty() && soa_in_authority(&m) && m.authoritative);
}

#[test]
fn empty_non_terminals_exist() {
    let node = Node {
        addrs: vec![],
        txt: vec!["v".into()],
    };
    let recs = records(&[("_acme-challenge.x.t.example", node)]);
    let m = ask(&recs, "x.t.example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError, "ENT is NODATA");
    assert!(soa_in_authority(&m));
    let m = ask(&recs, "_acme-challenge.x.t.example.", RecordType::TXT);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn apex_has_soa_ns_and_glue() {
    let recs = records(&[
        ("t.example", addrs(&["192.0.2.9"])),
        ("ns1.t.example", addrs(&["192.0.2.53"])),
    ]);
    let m = ask(&recs, "t.example.", RecordType::SOA);
    assert_eq!(m.answers.len(), 1);
    match &m.answers[0].data {
        RData::SOA(soa) => {
            assert_eq!(soa.serial, 7);
            assert_eq!(soa.mname.to_ascii(), "ns1.t.example.");
        }
        other => panic!("not a SOA: {other:?}"),
    }
    let m = ask(&recs, "t.example.", RecordType::NS);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(m.additionals.len(), 1, "glue for the in-zone NS only");
    let m = ask(&recs, "t.example.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    let m = ask(&records(&[]), "t.example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError, "apex always exists");
}

#[test]
fn wildcards_cover_missing_names_only() {
    let recs = records(&[
        ("*.t.example", addrs(&["192.0.2.80"])),
        ("fixed.t.example", addrs(&["192.0.2.81"])),
        (
            "_acme-challenge.deep.t.example",
            Node {
                addrs: vec![],
                txt: vec!["v".into()],
            },
        ),
    ]);
    let m = ask(&recs, "anything.t.example.", RecordType::A);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].name.to_ascii(), "anything.t.example.");
    let m = ask(&recs, "fixed.t.example.", RecordType::A);
    assert_eq!(
        m.answers[0].data,
        RData::A(A("192.0.2.81".parse().expect("ip")))
    );
    let m = ask(&recs, "a.b.t.example.", RecordType::A);
    assert_eq!(m.answers.len(), 1, "closest encloser is the apex");
    let m = ask(&recs, "x.fixed.t.example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NXDomain, "no *.fixed");
    let m = ask(&recs, "deep.t.example.", RecordType::A);
    assert!(
        m.answers.is_empty(),
        "an existing (empty) name is not wildcarded"
    );
    let m = ask(&recs, "anything.t.example.", RecordType::TXT);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[test]
fn outside_zone_transfers_and_odd_requests() {
    let recs = records(&[]);
    let m = ask(&recs, "example.org.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::Refused);
    assert!(!m.authoritative);
    let m = ask(&recs, "example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::Refused, "parent is outside");
    let m = ask(&recs, "t.example.", RecordType::AXFR);
    assert_eq!(m.response_code, ResponseCode::Refused);

    let mut two = Message::query();
    two.add_query(Query::query(
        parse_name("t.example").expect("n"),
        RecordType::A,
    ));
    two.add_query(Query::query(
        parse_name("t.example").expect("n"),
        RecordType::A,
    ));
    assert_eq!(
        respond(&zone(), &recs, &two).response_code,
        ResponseCode::FormErr
    );

    let mut update = Message::query();
    update.metadata.op_code = OpCode::Update;
    assert_eq!(
        respond(&zone(), &recs, &update).response_code,
        ResponseCode::NotImp
    );
}

#[test]
fn several_txt_values_and_long_ones() {
    let node = Node {
        addrs: vec![],
        txt: vec!["one".into(), "two".into(), "x".repeat(300)],
    };
    let recs = records(&[("_acme-challenge.t.example", node)]);
    let m = ask(&recs, "_acme-challenge.t.example.", RecordType::TXT);
    assert_eq!(m.answers.len(), 3);
    match &m.answers[2].data {
        RData::TXT(txt) => assert_eq!(txt.txt_data.len(), 2),
        other => panic!("not TXT: {other:?}"),
    }
}
