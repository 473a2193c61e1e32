//! Which Redis to talk to, from the URL: one server (`redis://`,
//! `rediss://`), the master that Sentinel names now (`redis+sentinel://`),
//! asked again on every reconnection so that a failover is followed, or
//! the nodes to learn a Redis Cluster from (`redis+cluster://`).

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr};

/// How the engine reaches Redis beyond what the URL says.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RedisOptions {
    /// PEM certificates to verify a `rediss://` server with, instead of
    /// the system's roots.
    pub root_ca: Option<Vec<u8>>,
}

impl RedisOptions {
    /// Verifies `rediss://` servers against these PEM certificates only.
    pub fn root_ca(mut self, pem: Vec<u8>) -> RedisOptions {
        self.root_ca = Some(pem);
        self
    }
}

/// Where connections go.
pub(crate) enum Target {
    /// One server.
    Server(Client),
    /// The master of a Sentinel-watched group.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster, learnt from these nodes (`redis://` URLs with the
    /// credentials).
    Cluster(Vec<String>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Server(_) => f.write_str("Target::Server"),
            Target::Sentinel(_) => f.write_str("Target::Sentinel"),
            Target::Cluster(_) => f.write_str("Target::Cluster"),
        }
    }
}

/// Why a URL names no Redis, or a CA cannot be used with it.
#[derive(Debug)]
pub(crate) enum TargetError {
    Url(String),
    Ca(String),
}

impl Target {
    pub(crate) fn parse(url: &str, options: &RedisOptions) -> Result<Target, TargetError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| TargetError::Url("not a URL".into()))?;
        match scheme {
            "redis" | "rediss" => {
                let client = match (&options.root_ca, scheme) {
                    (Some(pem), "rediss") => {
                        certificates(pem)?;
                        Client::build_with_tls(
                            url,
                            redis::TlsCertificates {
                                client_tls: None,
                                root_cert: Some(pem.clone()),
                            },
                        )
                        .map_err(|e| TargetError::Ca(e.to_string()))?
                    }
                    (Some(_), _) => {
                        return Err(TargetError::Ca(
                            "a CA is for TLS: the URL must be rediss://".into(),
                        ));
                    }
                    (None, _) => Client::open(url).map_err(|e| TargetError::Url(e.to_string()))?,
                };
                Ok(Target::Server(client))
            }
            "redis+sentinel" => {
                if options.root_ca.is_some() {
                    return Err(TargetError::Ca(
                        "TLS to Sentinel is not supported: use rediss:// to one server".into(),
                    ));
                }
                sentinel(rest).map(|c| Target::Sentinel(tokio::sync::Mutex::new(c)))
            }
            "redis+cluster" => {
                if options.root_ca.is_some() {
                    return Err(TargetError::Ca(
                        "TLS to a Redis Cluster is not supported: use rediss:// to one server"
                            .into(),
                    ));
                }
                cluster(rest).map(Target::Cluster)
            }
            other => Err(TargetError::Url(format!(
                "the scheme {other}:// is not one of redis://, rediss://, redis+sentinel://, \
                 redis+cluster://"
            ))),
        }
    }

    /// The engine's name, for `/healthz`.
    pub(crate) fn engine(&self) -> &'static str {
        match self {
            Target::Server(_) => "redis",
            Target::Sentinel(_) => "redis+sentinel",
            Target::Cluster(_) => "redis+cluster",
        }
    }

    /// A client for the server to connect to now: with Sentinel, the
    /// master it names now.
    pub(crate) async fn client(&self) -> redis::RedisResult<Client> {
        match self {
            Target::Server(client) => Ok(client.clone()),
            Target::Sentinel(sentinel) => sentinel.lock().await.async_get_client().await,
            Target::Cluster(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "a cluster has no one client",
            ))),
        }
    }
}

/// Checks that `pem` holds certificates, and only well-formed ones: an
/// empty trust store would fail every connection later, with a vaguer
/// error.
fn certificates(pem: &[u8]) -> Result<(), TargetError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| TargetError::Ca(format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(TargetError::Ca("no PEM certificate in it".into()));
    }
    Ok(())
}

/// `[user:password@]host:port[,host:port…]/master[/db]`, after the
/// scheme: the sentinels, the group's name, and the database and the
/// credentials for its master.
fn sentinel(rest: &str) -> Result<SentinelClient, TargetError> {
    let bad = |why: &str| TargetError::Url(why.to_owned());
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("no master name: redis+sentinel://host:port/master"))?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let addresses = addresses(hosts)?
        .into_iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host, port))
        .collect::<Vec<_>>();
    let mut path = path.trim_end_matches('/').split('/');
    let master = path
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("no master name: redis+sentinel://host:port/master"))?;
    let mut builder = SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)
        .map_err(|e| TargetError::Url(e.to_string()))?;
    if let Some(db) = path.next() {
        let db: i64 = db
            .parse()
            .map_err(|_| bad("the database after the master name is not a number"))?;
        builder = builder.set_client_to_redis_db(db);
    }
    if path.next().is_some() {
        return Err(bad("the path is /master or /master/db"));
    }
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => ("", Some(userinfo)),
        };
        if !user.is_empty() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_redis_password(password);
        }
    }
    builder.build().map_err(|e| TargetError::Url(e.to_string()))
}

/// `host:port[,host:port…]`, each host a name or an address (IPv6 in
/// brackets).
fn addresses(hosts: &str) -> Result<Vec<(String, u16)>, TargetError> {
    let bad = |why: &str| TargetError::Url(why.to_owned());
    let mut addresses = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = host
            .rsplit_once(':')
            .ok_or_else(|| bad("every node needs a port: host:port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| bad("a node's port is not a number"))?;
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if name.is_empty() {
            return Err(bad("a node has no host"));
        }
        addresses.push((name.to_owned(), port));
    }
    Ok(addresses)
}

/// `[user:password@]host:port[,host:port…][/]`, after the scheme: nodes to
/// learn the cluster from (any will do; several, so that one being down
/// at start does not matter).
fn cluster(rest: &str) -> Result<Vec<String>, TargetError> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !path.is_empty() {
        return Err(TargetError::Url(
            "a Redis Cluster has one database: no path after the nodes".into(),
        ));
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    Ok(addresses(hosts)?
        .into_iter()
        .map(|(host, port)| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            match userinfo {
                Some(userinfo) => format!("redis://{userinfo}@{host}:{port}/"),
                None => format!("redis://{host}:{port}/"),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_error(url: &str) -> String {
        match Target::parse(url, &RedisOptions::default()) {
            Err(TargetError::Url(why)) => why,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn sentinel_urls_name_hosts_a_master_and_a_database() {
        for url in [
            "redis+sentinel://127.0.0.1:26379/mymaster",
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2",
            "redis+sentinel://:pw@[::1]:26379/mymaster/",
            "redis+sentinel://user:pw@h:1/m",
        ] {
            let target = Target::parse(url, &RedisOptions::default()).unwrap();
            assert_eq!(target.engine(), "redis+sentinel", "{url}");
        }
        assert!(url_error("redis+sentinel://h:1").contains("master"));
        assert!(url_error("redis+sentinel://h:1/").contains("master"));
        assert!(url_error("redis+sentinel://h/m").contains("port"));
        assert!(url_error("redis+sentinel://h:x/m").contains("port"));
        assert!(url_error("redis+sentinel://:1/m").contains("host"));
        assert!(url_error("redis+sentinel://h:1/m/x").contains("database"));
        assert!(url_error("redis+sentinel://h:1/m/1/2").contains("path"));
        assert!(url_error("memcached://h:1").contains("scheme"));
    }

    #[test]
    fn cluster_urls_name_nodes_and_nothing_else() {
        let target = Target::parse(
            "redis+cluster://:pw@127.0.0.1:7000,[::1]:7001/",
            &RedisOptions::default(),
        )
        .unwrap();
        let Target::Cluster(nodes) = target else {
            panic!("{target:?}");
        };
        assert_eq!(
            nodes,
            ["redis://:pw@127.0.0.1:7000/", "redis://:pw@[::1]:7001/"]
        );
        assert!(url_error("redis+cluster://h:1/0").contains("one database"));
        assert!(url_error("redis+cluster://h/").contains("port"));
    }

    #[test]
    fn a_ca_goes_only_with_tls_and_must_hold_certificates() {
        let options = RedisOptions::default().root_ca(b"not a certificate".to_vec());
        for url in [
            "redis://127.0.0.1/",
            "redis+sentinel://h:1/m",
            "rediss://127.0.0.1/",
        ] {
            assert!(
                matches!(Target::parse(url, &options), Err(TargetError::Ca(_))),
                "{url}"
            );
        }
    }
}
