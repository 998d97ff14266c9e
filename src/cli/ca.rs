//! `syncgate ca init`: an enterprise CA for trying egress mode, and how to make clients trust it.
//!
//! Production configurations point `egress.ca_cert` and `egress.ca_key` at a CA the
//! organisation already runs and already trusts on managed machines. For a trial this makes
//! one, with a property a borrowed CA rarely has: **name constraints** (RFC 5280 §4.2.1.10) that
//! allow it to sign only for the Graph hosts. A client that enforces them (rustls, OpenSSL,
//! Windows, macOS, .NET) rejects anything else it signs, so even a leaked trial key cannot
//! impersonate other sites.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose,
    NameConstraints,
};

use crate::egress::hosts::{GRAPH_HOSTS, is_host_name};

/// `syncgate ca`: the enterprise CA egress mode signs intercepted hosts' certificates with.
#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a CA for trials: DIR/egress-ca.crt (to trust on clients) and DIR/egress-ca.key
    /// (mode 0600, for syncgate only); prints how to trust it and the [egress] lines to paste.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The folder to write the two files into (created if missing); existing files are never
    /// overwritten.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// The CA's common name, as clients show it.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "syncgate egress CA (trial)"
    )]
    name: String,
    /// How many days the CA is valid.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    days: u32,
    /// A host the CA may sign for (repeat it); default: the four clouds' Graph hosts. Must
    /// cover egress.graph_hosts.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
}

pub(crate) fn run(args: CaArgs) -> anyhow::Result<()> {
    match args.command {
        CaCommand::Init(args) => init(args),
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let hosts: Vec<String> = if args.hosts.is_empty() {
        GRAPH_HOSTS.iter().map(|h| (*h).to_owned()).collect()
    } else {
        args.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
    };
    if let Some(bad) = hosts.iter().find(|h| !is_host_name(h)) {
        bail!("{bad:?} is not a host name");
    }
    if args.days == 0 || args.days > 3650 {
        bail!("--days must be between 1 and 3650");
    }
    let (cert_pem, key_pem) = make_ca(&args.name, args.days, &hosts)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // Absolute, so the lines printed for the configuration hold wherever it lives.
    let out = std::fs::canonicalize(&args.out)
        .with_context(|| format!("cannot resolve {}", args.out.display()))?;
    let cert_path = out.join("egress-ca.crt");
    let key_path = out.join("egress-ca.key");
    for path in [&cert_path, &key_path] {
        if path.exists() {
            bail!(
                "{} exists already; syncgate never overwrites a CA (move it away first)",
                path.display()
            );
        }
    }
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, cert_pem.as_bytes(), 0o644)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", instructions(&cert_path, &key_path, &hosts))?;
    out.flush()?;
    Ok(())
}

/// A self-signed CA certificate (PEM) limited to `hosts`, and its key (PEM).
fn make_ca(name: &str, days: u32, hosts: &[String]) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "syncgate");
    // It signs leaves only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: hosts
            .iter()
            .map(|h| GeneralSubtree::DnsName(h.clone()))
            .collect(),
        excluded_subtrees: Vec::new(),
    });
    let now = chrono::Utc::now().timestamp();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 3600)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + i64::from(days) * 86_400)?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Write `bytes` to a new file with `mode` (never replacing one).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What to do next: paste the `[egress]` lines, and trust the certificate on clients.
fn instructions(cert: &Path, key: &Path, hosts: &[String]) -> String {
    let cert = cert.display();
    let key = key.display();
    format!(
        r#"Created a CA for egress mode (a trial CA: production points at the organisation's own).
  certificate: {cert}   (give this to clients to trust)
  key:         {key}   (mode 0600; syncgate only, never copy it to clients)
It may sign only for: {hosts} (name constraints).

Add to syncgate's configuration:

[egress]
enabled = true
ca_cert = "{cert}"
ca_key = "{key}"

Then point clients at syncgate as their proxy (HTTPS_PROXY=http://<syncgate's proxy.listen>) and make
them trust the certificate:

  Debian/Ubuntu  sudo cp {cert} /usr/local/share/ca-certificates/syncgate-egress-ca.crt && sudo update-ca-certificates
  RHEL/Fedora    sudo cp {cert} /etc/pki/ca-trust/source/anchors/ && sudo update-ca-trust
  macOS          sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {cert}
  Windows        certutil -addstore -f Root {cert}
                 (PowerShell: Import-Certificate -FilePath {cert} -CertStoreLocation Cert:\LocalMachine\Root)
  Python         SSL_CERT_FILE / REQUESTS_CA_BUNDLE = a bundle holding it (the Graph SDK's httpx reads
                 SSL_CERT_FILE; or httpx.AsyncClient(verify="bundle.pem", proxy="http://..."))
  .NET, pwsh     the system store above (Windows store; OpenSSL's on Linux, macOS keychain)
  Node.js        NODE_EXTRA_CA_CERTS={cert}
  curl           curl -x http://<proxy> --cacert {cert} https://graph.microsoft.com/v1.0/...
"#,
        hosts = hosts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_ca_is_one_egress_mode_loads_and_it_signs_only_for_its_hosts() {
        let dir = tempfile::tempdir().unwrap();
        init(InitArgs {
            out: dir.path().join("ca"),
            name: "test CA".into(),
            days: 30,
            hosts: vec!["graph.microsoft.com".into()],
        })
        .unwrap();
        let (cert, key) = (
            dir.path().join("ca/egress-ca.crt"),
            dir.path().join("ca/egress-ca.key"),
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let minter = crate::egress::mint::Minter::load(&cert, &key).unwrap();
        crate::egress::mint::tests::verifies(
            &cert,
            "graph.microsoft.com",
            minter.server_config("graph.microsoft.com").unwrap(),
        )
        .unwrap();
        // A leaf for a host outside the constraints is minted, but clients refuse it.
        let outside = crate::egress::mint::tests::verifies(
            &cert,
            "graph.microsoft.us",
            minter.server_config("graph.microsoft.us").unwrap(),
        )
        .unwrap_err();
        assert!(outside.to_lowercase().contains("name"), "{outside}");
        // Never overwritten.
        let again = init(InitArgs {
            out: dir.path().join("ca"),
            name: "test CA".into(),
            days: 30,
            hosts: Vec::new(),
        });
        assert!(again.unwrap_err().to_string().contains("exists already"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (days, hosts) in [
            (0, vec![]),
            (4000, vec![]),
            (30, vec!["not a host".to_owned()]),
        ] {
            let made = init(InitArgs {
                out: dir.path().to_owned(),
                name: "x".into(),
                days,
                hosts,
            });
            assert!(made.is_err());
        }
        assert!(!dir.path().join("egress-ca.key").exists());
    }
}
