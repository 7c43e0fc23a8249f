//! The init step for real: runs it inside network namespaces this test creates (CI runs as
//! root), reads the rules back with `iptables-save`, and runs it again to show nothing
//! changes. Both iptables backends are covered.

use ferry_proxy::init;

use ferry_testkit::netns::{must, Netns};
use init::{apply, chain_rules, Firewall, InitArgs, InitError, PortRange, Subnet};

/// `iptables-save -t nat` of `ns`, without comments and counters.
fn nat_rules(ns: &Netns, save_bin: &str) -> Vec<String> {
    let out = must(&["ip", "netns", "exec", ns.name(), save_bin, "-t", "nat"]);
    out.lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with(":PROXY_INIT"))
        .map(|l| l.split(" [").next().unwrap().to_string())
        .collect()
}

fn args(firewall: Firewall) -> InitArgs {
    InitArgs {
        outbound_ports_to_ignore: vec!["5432".parse().unwrap(), "6000-6010".parse().unwrap()],
        subnets_to_ignore: vec!["10.96.0.0/12".parse().unwrap()],
        firewall_bin_path: firewall,
        ..InitArgs::default()
    }
}

const EXPECTED: &[&str] = &[
    ":PROXY_INIT_OUTPUT -",
    ":PROXY_INIT_REDIRECT -",
    "-A PREROUTING -j PROXY_INIT_REDIRECT",
    "-A OUTPUT -j PROXY_INIT_OUTPUT",
    "-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -m comment --comment \"ferry-init/ignore-proxy-uid\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -o lo -m comment --comment \"ferry-init/ignore-loopback\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -p tcp -m multiport --dports 5432,6000:6010 -m comment --comment \"ferry-init/ignore-outbound-ports-5432,6000:6010\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -d 10.96.0.0/12 -m comment --comment \"ferry-init/ignore-subnet-10.96.0.0/12\" -j RETURN",
    "-A PROXY_INIT_OUTPUT -p tcp -m comment --comment \"ferry-init/redirect-outbound\" -j REDIRECT --to-ports 4140",
    "-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -m comment --comment \"ferry-init/ignore-inbound-ports-4190,4191\" -j RETURN",
    "-A PROXY_INIT_REDIRECT -p tcp -m comment --comment \"ferry-init/redirect-inbound\" -j REDIRECT --to-ports 4143",
];

fn installs_idempotently(firewall: Firewall, save_bin: &str) {
    let ns = Netns::new("ferry-init");
    apply(&args(firewall), Some(ns.name())).expect("first run");
    let first = nat_rules(&ns, save_bin);
    let mut sorted = first.clone();
    sorted.sort();
    let mut expected: Vec<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        sorted,
        expected,
        "rules after the first run:\n{}",
        first.join("\n")
    );

    apply(&args(firewall), Some(ns.name())).expect("second run");
    assert_eq!(
        nat_rules(&ns, save_bin),
        first,
        "a second run must change nothing"
    );
}

#[test]
fn installs_rules_with_iptables_nft_idempotently() {
    installs_idempotently(Firewall::Nft, "iptables-nft-save");
}

#[test]
fn installs_rules_with_iptables_legacy_idempotently() {
    installs_idempotently(Firewall::Legacy, "iptables-legacy-save");
}

#[test]
fn changed_arguments_replace_the_old_rules() {
    let ns = Netns::new("ferry-init");
    apply(&args(Firewall::Nft), Some(ns.name())).unwrap();
    let narrower = InitArgs {
        firewall_bin_path: Firewall::Nft,
        incoming_proxy_port: 5143,
        ..InitArgs::default()
    };
    apply(&narrower, Some(ns.name())).unwrap();
    let rules = nat_rules(&ns, "iptables-nft-save");
    assert!(
        rules.iter().any(|r| r.ends_with("--to-ports 5143")),
        "{rules:#?}"
    );
    assert!(
        !rules
            .iter()
            .any(|r| r.contains("5432") || r.contains("10.96.0.0")),
        "{rules:#?}"
    );
    assert_eq!(
        rules
            .iter()
            .filter(|r| r.starts_with("-A PREROUTING"))
            .count(),
        1
    );
}

#[test]
fn missing_namespace_or_binary_is_an_error() {
    let err = apply(&InitArgs::default(), Some("ferry-init-no-such-netns")).unwrap_err();
    assert!(matches!(err, InitError::NoFirewall { .. }), "{err}");
    assert!(err.to_string().contains("iptables-nft"), "{err}");
}

#[test]
fn rule_list_is_built_from_the_arguments() {
    let many: Vec<PortRange> = (9000..9020).map(PortRange::single).collect();
    let rules = chain_rules(&InitArgs {
        inbound_ports_to_ignore: many,
        ..InitArgs::default()
    });
    let multiport: Vec<&Vec<String>> = rules
        .iter()
        .filter(|r| r.contains(&"--dports".to_string()))
        .collect();
    assert_eq!(
        multiport.len(),
        2,
        "20 ports need two multiport rules of at most 15"
    );
    assert_eq!(rules.last().unwrap().last().unwrap(), "4140");
}

#[test]
fn flags_parse_like_linkerd_init() {
    assert_eq!(
        "8000-8100".parse::<PortRange>().unwrap().to_string(),
        "8000:8100"
    );
    assert!("0".parse::<PortRange>().is_err());
    assert!("90-80".parse::<PortRange>().is_err());
    assert_eq!(
        "10.1.2.3/8".parse::<Subnet>().unwrap().to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        "192.168.1.1".parse::<Subnet>().unwrap().to_string(),
        "192.168.1.1/32"
    );
    assert!("fd00::/8".parse::<Subnet>().is_err());
    assert!("10.0.0.0/33".parse::<Subnet>().is_err());
    assert_eq!(
        "/usr/sbin/iptables-legacy".parse::<Firewall>().unwrap(),
        Firewall::Legacy
    );
    assert!("ufw".parse::<Firewall>().is_err());

    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }
    let cli = Cli::try_parse_from(["init"]).unwrap();
    assert_eq!(cli.init, InitArgs::default());
    let cli = Cli::try_parse_from([
        "init",
        "--incoming-proxy-port",
        "4143",
        "--outbound-ports-to-ignore",
        "25,587",
        "--subnets-to-ignore",
        "10.0.0.0/8",
        "--firewall-bin-path",
        "iptables-nft",
    ])
    .unwrap();
    assert_eq!(cli.init.outbound_ports_to_ignore.len(), 2);
    assert_eq!(cli.init.firewall_bin_path, Firewall::Nft);
}
