//! The egress policy: where a plugin may connect during a call.
//!
//! Deny by default. A request is allowed only when it matches both an entry
//! the plugin's manifest requests (a URL template over the site's config) and
//! an entry the operator granted for one of the call's sites. Addresses that
//! resolve to loopback, link-local, cloud-metadata or unspecified addresses
//! are refused unless the matching grant names that address (or `localhost`)
//! literally: a wildcard never reaches them. Every denial says what to add.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An entry of a manifest's `egress` list: a URL whose parts may contain
/// `{key}` placeholders filled from the site's config, e.g. `"{endpoint}"` or
/// `"https://{region}.example.com"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressTemplate(String);

impl EgressTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut depth = 0usize;
        for c in text.chars() {
            match c {
                '{' if depth == 0 => depth = 1,
                '}' if depth == 1 => depth = 0,
                '{' | '}' => return Err(format!("'{text}' has unbalanced braces")),
                _ => {}
            }
        }
        if depth != 0 {
            return Err(format!("'{text}' has unbalanced braces"));
        }
        if !text.contains('{') {
            EgressRule::parse(text)?;
        }
        Ok(Self(text.to_owned()))
    }

    /// Substitute the site's config and parse the result.
    pub fn render(&self, config: &BTreeMap<String, String>) -> Result<EgressRule, String> {
        let mut out = String::new();
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .ok_or_else(|| format!("'{}' has unbalanced braces", self.0))?;
            let key = &rest[start + 1..end];
            let value = config.get(key).ok_or_else(|| {
                format!(
                    "egress entry '{}' needs site setting '{key}', which is unset",
                    self.0
                )
            })?;
            out.push_str(value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        EgressRule::parse(&out)
    }
}

impl fmt::Display for EgressTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which hosts an egress rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One DNS name, lower-case.
    Name(String),
    /// `*.example.com`: any name ending in `.example.com` (not the apex).
    Wildcard(String),
    /// A literal address.
    Ip(IpAddr),
}

/// A concrete egress rule: scheme, host pattern and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    pub scheme: Scheme,
    pub host: HostPattern,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
        })
    }
}

impl EgressRule {
    /// Parse `scheme://host[:port][/ignored-path]`; the port defaults to the
    /// scheme's.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("'{text}' must start with http:// or https://"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("'{text}': scheme '{other}' is not http or https")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(format!("'{text}' must not carry credentials"));
        }
        let (host, port) = split_host_port(authority).map_err(|e| format!("'{text}': {e}"))?;
        let port = port.unwrap_or(scheme.default_port());
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(format!("'{text}': a wildcard must look like *.example.com"));
            }
            HostPattern::Wildcard(suffix.to_ascii_lowercase())
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Ip(ip)
        } else if host.is_empty() || host.contains('*') {
            return Err(format!("'{text}' has no valid host"));
        } else {
            HostPattern::Name(host.to_ascii_lowercase())
        };
        Ok(Self { scheme, host, port })
    }

    /// Whether this rule covers a request to `scheme://host:port`.
    pub fn matches(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match &self.host {
            HostPattern::Name(name) => *name == host,
            HostPattern::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.')),
            HostPattern::Ip(ip) => host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|h| h == *ip),
        }
    }

    /// Whether this rule covers the host of `url` on any port and scheme:
    /// what the host's data mover may reach for a site (a platform serves
    /// disk transfers from other ports than its API). Special addresses
    /// (loopback, link-local, metadata) only when named literally.
    pub fn covers_host_of(&self, url: &EgressRule) -> bool {
        match &url.host {
            HostPattern::Name(name) => self.matches(self.scheme, name, self.port),
            HostPattern::Ip(ip) => match special_address(*ip) {
                Some(_) => self.names_address(*ip),
                None => self.matches(self.scheme, &ip.to_string(), self.port),
            },
            HostPattern::Wildcard(_) => false,
        }
    }

    /// Whether this rule names `addr` explicitly, which is what lets a
    /// request reach a loopback, link-local or metadata address.
    pub fn names_address(&self, addr: IpAddr) -> bool {
        match &self.host {
            HostPattern::Ip(ip) => *ip == addr,
            HostPattern::Name(name) => name == "localhost" && addr.is_loopback(),
            HostPattern::Wildcard(_) => false,
        }
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match &self.host {
            HostPattern::Name(n) => n.clone(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
            HostPattern::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            HostPattern::Ip(ip) => ip.to_string(),
        };
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '[' in IPv6 host")?;
        let port = rest[end + 1..].strip_prefix(':');
        (&rest[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| format!("port '{p}' is not a number 0-65535"))
        })
        .transpose()?;
    Ok((host, port))
}

/// Why an address is off limits unless explicitly granted, if it is.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    const METADATA_V4: [Ipv4Addr; 2] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    // AWS's IPv6 instance metadata endpoint.
    const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if METADATA_V4.contains(&v4) => Some("a cloud metadata address"),
        IpAddr::V6(v6) if v6 == METADATA_V6 => Some("a cloud metadata address"),
        ip if ip.is_loopback() => Some("a loopback address"),
        ip if ip.is_unspecified() => Some("an unspecified address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
        _ => None,
    }
}

/// The rules that apply to one site during a call.
#[derive(Debug, Clone)]
pub struct SiteEgress {
    pub site: String,
    /// The manifest's templates rendered with this site's config.
    pub requested: Vec<EgressRule>,
    /// What the operator granted for this site.
    pub granted: Vec<EgressRule>,
    /// Manifest entries that could not be rendered for this site (a setting
    /// they need is unset), quoted in denials.
    pub unrendered: Vec<String>,
}

/// The egress policy of one call: the sites it may touch.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    pub plugin: String,
    pub sites: Vec<SiteEgress>,
}

/// A request the policy allowed, and under which site's grant.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The first site whose grant covers the destination (its CA is used).
    pub site: String,
    /// Every site whose grant covers it: their secrets may be sent there.
    pub sites: Vec<String>,
    pub grants: Vec<EgressRule>,
}

impl EgressPolicy {
    /// Check a request's scheme, host and port against manifest ∩ grant.
    pub fn check(&self, scheme: Scheme, host: &str, port: u16) -> Result<Allowed, String> {
        let target = format!("{scheme}://{}:{port}", bracket(host));
        let requested = self
            .sites
            .iter()
            .any(|s| s.requested.iter().any(|r| r.matches(scheme, host, port)));
        if !requested {
            let listed: Vec<String> = self
                .sites
                .iter()
                .flat_map(|s| s.requested.iter().map(ToString::to_string))
                .collect();
            let notes: Vec<&str> = self
                .sites
                .iter()
                .flat_map(|s| s.unrendered.iter().map(String::as_str))
                .collect();
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            return Err(format!(
                "egress to {target} denied: plugin '{}' does not request it in its manifest \
                 (it requests [{}]){notes}; a plugin may only reach what its manifest's `egress` lists",
                self.plugin,
                listed.join(", ")
            ));
        }
        // Every site whose grant covers the destination: sites of one
        // platform may share an endpoint (two regions of one cloud), and
        // each may send its own credentials there.
        let mut allowed: Option<Allowed> = None;
        for site in &self.sites {
            let grants: Vec<EgressRule> = site
                .granted
                .iter()
                .filter(|g| g.matches(scheme, host, port))
                .cloned()
                .collect();
            if grants.is_empty() || !site.requested.iter().any(|r| r.matches(scheme, host, port)) {
                continue;
            }
            match &mut allowed {
                None => {
                    allowed = Some(Allowed {
                        site: site.site.clone(),
                        sites: vec![site.site.clone()],
                        grants,
                    });
                }
                Some(allowed) => {
                    allowed.sites.push(site.site.clone());
                    allowed.grants.extend(grants);
                }
            }
        }
        if let Some(allowed) = allowed {
            return Ok(allowed);
        }
        let sites: Vec<&str> = self.sites.iter().map(|s| s.site.as_str()).collect();
        Err(format!(
            "egress to {target} denied: no grant of site '{}' covers it; add \"{target}\" to the \
             site's egress grant if the plugin should reach it",
            sites.join("', '")
        ))
    }

    /// Check the addresses a host resolved to; the first refused one wins.
    pub fn check_addresses(
        allowed: &Allowed,
        scheme: Scheme,
        host: &str,
        port: u16,
        addrs: &[IpAddr],
    ) -> Result<(), String> {
        for addr in addrs {
            if let Some(kind) = special_address(*addr)
                && !allowed.grants.iter().any(|g| g.names_address(*addr))
            {
                let literal = match addr {
                    IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                };
                return Err(format!(
                    "egress to {scheme}://{}:{port} denied: it resolves to {addr}, {kind}, which \
                     is refused unless the site's egress grant names it; add \
                     \"{scheme}://{literal}:{port}\" to the grant of site '{}' only if the \
                     plugin must reach it",
                    bracket(host),
                    allowed.site
                ));
            }
        }
        Ok(())
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests;
