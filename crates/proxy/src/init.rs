//! The init step (`ferry-proxy init`): installs the nat-table rules that send a pod's TCP
//! traffic through its proxy, like linkerd-init. Inbound connections are redirected to the
//! inbound port, the app's outbound connections to the outbound port; the proxy's own
//! traffic (by UID), loopback, and the configured ports and subnets are left alone.
//!
//! Running it twice yields the same rules: Ferry's chains are flushed and refilled, and
//! the jumps into them are added only when missing. The proxy recovers each connection's
//! original destination with `SO_ORIGINAL_DST`; that is the proxy's business, not this
//! module's.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;

/// Chain that PREROUTING jumps to; redirects inbound TCP to the proxy's inbound port.
pub const CHAIN_REDIRECT: &str = "PROXY_INIT_REDIRECT";
/// Chain that OUTPUT jumps to; redirects the app's outbound TCP to the outbound port.
pub const CHAIN_OUTPUT: &str = "PROXY_INIT_OUTPUT";
/// Prefix of every rule's comment, so `iptables-save` shows who wrote it.
const COMMENT: &str = "ferry-init";
/// `multiport` takes at most 15 ports per rule (a range counts twice).
const MULTIPORT_MAX: usize = 15;

/// Flags of the init step; names and defaults match linkerd-init's.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// Port the proxy accepts redirected inbound connections on.
    #[arg(long, default_value_t = 4143)]
    pub incoming_proxy_port: u16,
    /// Port the proxy accepts redirected outbound connections on.
    #[arg(long, default_value_t = 4140)]
    pub outgoing_proxy_port: u16,
    /// UID the proxy runs as; its own connections are never redirected.
    #[arg(long, default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Inbound ports (or `a-b` ranges) not redirected, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4190,4191")]
    pub inbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound destination ports (or ranges) not redirected, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub outbound_ports_to_ignore: Vec<PortRange>,
    /// Outbound destination IPv4 subnets (CIDR) not redirected, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub subnets_to_ignore: Vec<Subnet>,
    /// `iptables-nft`, `iptables-legacy`, or `auto` to pick the first that works.
    #[arg(long, default_value = "auto")]
    pub firewall_bin_path: Firewall,
}

impl Default for InitArgs {
    fn default() -> Self {
        Self {
            incoming_proxy_port: 4143,
            outgoing_proxy_port: 4140,
            proxy_uid: 2102,
            inbound_ports_to_ignore: vec![PortRange::single(4190), PortRange::single(4191)],
            outbound_ports_to_ignore: Vec::new(),
            subnets_to_ignore: Vec::new(),
            firewall_bin_path: Firewall::Auto,
        }
    }
}

/// Errors of the init step.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// No iptables binary that works was found.
    #[error("no working iptables found (tried {tried})")]
    NoFirewall { tried: String },
    /// An iptables binary could not be started.
    #[error("running {bin}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    /// An iptables command failed.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// A port or an inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (equal to `start` for a single port).
    pub end: u16,
}

impl PortRange {
    /// One port.
    pub const fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// Slots it takes in a `multiport` list.
    fn weight(&self) -> usize {
        if self.start == self.end {
            1
        } else {
            2
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (start, end) = (port(a)?, port(b)?);
                if start > end {
                    return Err(format!("invalid port range {s:?}: start after end"));
                }
                Ok(Self { start, end })
            }
            None => port(s).map(Self::single),
        }
    }
}

impl fmt::Display for PortRange {
    /// In `multiport` syntax: `80` or `8000:8100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}:{}", self.start, self.end)
        }
    }
}

/// An IPv4 subnet in CIDR notation (a bare address means `/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    /// Network address (host bits cleared).
    pub addr: Ipv4Addr,
    /// Prefix length, 0 to 32.
    pub prefix: u8,
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        if addr.contains(':') {
            return Err(format!(
                "{s:?}: IPv6 subnets are not supported (rules are IPv4 only)"
            ));
        }
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("invalid subnet {s:?}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("invalid prefix in subnet {s:?}"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which iptables backend writes the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firewall {
    /// The nf_tables backend (the default on current distributions).
    Nft,
    /// The legacy xtables backend.
    Legacy,
    /// The first of nft, legacy, plain `iptables` that answers.
    Auto,
}

impl FromStr for Firewall {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.rsplit('/').next().unwrap_or(s) {
            "iptables-nft" | "nft" => Ok(Self::Nft),
            "iptables-legacy" | "legacy" => Ok(Self::Legacy),
            "auto" => Ok(Self::Auto),
            other => Err(format!(
                "unknown firewall {other:?}: use iptables-nft, iptables-legacy or auto"
            )),
        }
    }
}

impl Firewall {
    /// Candidate binaries, in order of preference.
    fn candidates(self) -> &'static [&'static str] {
        match self {
            Self::Nft => &["iptables-nft"],
            Self::Legacy => &["iptables-legacy"],
            Self::Auto => &["iptables-nft", "iptables-legacy", "iptables"],
        }
    }
}

/// One iptables invocation on the nat table, as its arguments after `-t nat`.
pub type Rule = Vec<String>;

fn rule(parts: &[&str]) -> Rule {
    parts.iter().map(|p| p.to_string()).collect()
}

fn multiport_chunks(ports: &[PortRange]) -> Vec<String> {
    let mut chunks = Vec::new();
    let (mut current, mut weight) = (Vec::new(), 0);
    for port in ports {
        if weight + port.weight() > MULTIPORT_MAX {
            chunks.push(std::mem::take(&mut current).join(","));
            weight = 0;
        }
        current.push(port.to_string());
        weight += port.weight();
    }
    if !current.is_empty() {
        chunks.push(current.join(","));
    }
    chunks
}

/// Tags a rule with a `ferry-init/<what>` comment, placed before its last `target_len`
/// arguments (the `-j` target and its options).
fn commented(mut rule: Rule, what: &str, target_len: usize) -> Rule {
    let target = rule.split_off(rule.len() - target_len);
    rule.extend(["-m", "comment", "--comment"].map(String::from));
    rule.push(format!("{COMMENT}/{what}"));
    rule.extend(target);
    rule
}

/// The rules of Ferry's two chains, in order (each is appended with `-A`).
pub fn chain_rules(args: &InitArgs) -> Vec<Rule> {
    let mut rules = Vec::new();
    for ports in multiport_chunks(&args.inbound_ports_to_ignore) {
        let r = rule(&[
            CHAIN_REDIRECT,
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &ports,
            "-j",
            "RETURN",
        ]);
        rules.push(commented(r, &format!("ignore-inbound-ports-{ports}"), 2));
    }
    let to_inbound = args.incoming_proxy_port.to_string();
    let r = rule(&[
        CHAIN_REDIRECT,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to_inbound,
    ]);
    rules.push(commented(r, "redirect-inbound", 4));

    let uid = args.proxy_uid.to_string();
    let r = rule(&[
        CHAIN_OUTPUT,
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ]);
    rules.push(commented(r, "ignore-proxy-uid", 2));
    let r = rule(&[CHAIN_OUTPUT, "-o", "lo", "-j", "RETURN"]);
    rules.push(commented(r, "ignore-loopback", 2));
    for ports in multiport_chunks(&args.outbound_ports_to_ignore) {
        let r = rule(&[
            CHAIN_OUTPUT,
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &ports,
            "-j",
            "RETURN",
        ]);
        rules.push(commented(r, &format!("ignore-outbound-ports-{ports}"), 2));
    }
    for subnet in &args.subnets_to_ignore {
        let r = rule(&[CHAIN_OUTPUT, "-d", &subnet.to_string(), "-j", "RETURN"]);
        rules.push(commented(r, &format!("ignore-subnet-{subnet}"), 2));
    }
    let to_outbound = args.outgoing_proxy_port.to_string();
    let r = rule(&[
        CHAIN_OUTPUT,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to_outbound,
    ]);
    rules.push(commented(r, "redirect-outbound", 4));
    rules
}

/// Runs iptables commands, optionally inside a named network namespace (`ip netns`).
struct Runner<'a> {
    bin: String,
    netns: Option<&'a str>,
}

impl Runner<'_> {
    fn command(bin: &str, netns: Option<&str>, args: &[String]) -> Command {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args);
        cmd
    }

    /// Runs `bin -w 5 -t nat ARGS`; returns whether it succeeded, or an error if
    /// `must_succeed` and it did not.
    fn nat(&self, args: &[String], must_succeed: bool) -> Result<bool, InitError> {
        let mut full = vec![
            "-w".to_string(),
            "5".to_string(),
            "-t".to_string(),
            "nat".to_string(),
        ];
        full.extend_from_slice(args);
        let out = Self::command(&self.bin, self.netns, &full)
            .output()
            .map_err(|source| InitError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        if out.status.success() || !must_succeed {
            return Ok(out.status.success());
        }
        Err(InitError::Command {
            command: format!("{} {}", self.bin, full.join(" ")),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn pick_firewall(firewall: Firewall, netns: Option<&str>) -> Result<String, InitError> {
    for bin in firewall.candidates() {
        let probe = Runner::command(
            bin,
            netns,
            &[
                "-w".into(),
                "5".into(),
                "-t".into(),
                "nat".into(),
                "-S".into(),
            ],
        )
        .output();
        if probe.is_ok_and(|o| o.status.success()) {
            return Ok(bin.to_string());
        }
    }
    Err(InitError::NoFirewall {
        tried: firewall.candidates().join(", "),
    })
}

/// Installs the rules in the current network namespace.
pub fn run(args: &InitArgs) -> Result<(), InitError> {
    apply(args, None)
}

/// Installs the rules in the network namespace `netns` (as named by `ip netns`), or in the
/// current one.
pub fn apply(args: &InitArgs, netns: Option<&str>) -> Result<(), InitError> {
    let runner = Runner {
        bin: pick_firewall(args.firewall_bin_path, netns)?,
        netns,
    };
    for (chain, parent) in [(CHAIN_REDIRECT, "PREROUTING"), (CHAIN_OUTPUT, "OUTPUT")] {
        let exists = runner.nat(
            &[String::from("-n"), String::from("-L"), chain.to_string()],
            false,
        )?;
        let op = if exists { "-F" } else { "-N" };
        runner.nat(&[op.to_string(), chain.to_string()], true)?;
        let jump = |op: &str| {
            vec![
                op.to_string(),
                parent.to_string(),
                "-j".to_string(),
                chain.to_string(),
            ]
        };
        if !runner.nat(&jump("-C"), false)? {
            runner.nat(&jump("-A"), true)?;
        }
    }
    for rule in chain_rules(args) {
        let mut append = vec!["-A".to_string()];
        append.extend(rule);
        runner.nat(&append, true)?;
    }
    Ok(())
}
