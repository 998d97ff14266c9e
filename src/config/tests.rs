//! The configuration's two stages, on the shipped reference file and on edge cases.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::limits::connection_caps;
use super::*;

#[test]
fn the_shipped_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/syncgate.toml");
    let raw = RawConfig::load(&path).unwrap();
    let settings = raw.validate().unwrap();
    assert_eq!(settings.upstream.to_string(), "https://graph.microsoft.com");
}

#[test]
fn unknown_keys_are_named() {
    let err = toml::from_str::<RawConfig>("[proxy]\nlisen = \"1.2.3.4:5\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
    let err = toml::from_str::<RawConfig>("[proxi]\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `proxi`"), "{err}");
}

#[test]
fn clouds_resolve_by_name_and_urls_must_not_carry_a_path() {
    assert_eq!(
        UpstreamTarget::parse("usgov").unwrap().to_string(),
        "https://graph.microsoft.us"
    );
    assert_eq!(
        UpstreamTarget::parse("DOD").unwrap().to_string(),
        "https://dod-graph.microsoft.us"
    );
    assert_eq!(
        UpstreamTarget::parse("china").unwrap().authority.host(),
        "microsoftgraph.chinacloudapi.cn"
    );
    assert!(UpstreamTarget::parse("http://127.0.0.1:9000/").is_ok());
    assert!(UpstreamTarget::parse("https://graph.microsoft.com/v1.0").is_err());
    assert!(UpstreamTarget::parse("ftp://x").is_err());
    assert!(UpstreamTarget::parse("moon").is_err());
}

#[test]
fn sizes_take_binary_units() {
    assert_eq!(parse_size("k", "1MiB").unwrap(), 1 << 20);
    assert_eq!(parse_size("k", "512KiB").unwrap(), 512 << 10);
    assert_eq!(parse_size("k", "100").unwrap(), 100);
    assert!(parse_size("k", "1MB").is_err());
    assert!(parse_size("k", "0").is_err());
    assert!(parse_size("k", "MiB").is_err());
}

#[test]
fn durations_need_a_unit() {
    assert_eq!(
        parse_duration("k", "250ms").unwrap(),
        Duration::from_millis(250)
    );
    assert_eq!(parse_duration("k", "2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("k", "30").is_err());
    assert!(parse_duration("k", "s").is_err());
    assert!(parse_duration("k", "3d").is_err());
}

#[test]
fn overrides_win_over_the_file() {
    let mut raw = RawConfig::default();
    raw.apply(Overrides {
        listen: Some("127.0.0.1:1".into()),
        upstream: Some("china".into()),
        db: Some("x.db".into()),
        admin_listen: Some("127.0.0.1:2".into()),
    });
    let s = raw.validate().unwrap();
    assert_eq!(s.listen.port(), 1);
    assert_eq!(s.admin_listen.port(), 2);
    assert_eq!(
        s.store,
        crate::store::StoreLocation::Sqlite(PathBuf::from("x.db"))
    );
    assert_eq!(
        s.upstream.authority.host(),
        "microsoftgraph.chinacloudapi.cn"
    );
}

#[test]
fn required_client_auth_needs_a_ca() {
    let raw: RawConfig = toml::from_str(
        "[proxy.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_auth = \"required\"\n",
    )
    .unwrap();
    let err = raw.validate().err().unwrap();
    assert!(
        err.to_string().starts_with("proxy.tls.client_auth"),
        "{err}"
    );
}
#[test]
fn connection_caps_stay_under_the_open_file_limit() {
    // Defaults: half of what the reserve leaves, a quarter of that per client.
    assert_eq!(connection_caps(1024, None, None).unwrap(), (480, 120));
    assert_eq!(connection_caps(128, None, None).unwrap(), (32, 8));
    assert_eq!(
        connection_caps(u64::MAX, None, None).unwrap(),
        (
            DEFAULT_MAX_CONNECTIONS_CEILING,
            DEFAULT_MAX_CONNECTIONS_CEILING / 4
        )
    );
    assert_eq!(
        connection_caps(1024, Some(100), Some(100)).unwrap(),
        (100, 100)
    );
    let err = connection_caps(1024, Some(481), None).unwrap_err();
    assert!(err.to_string().contains("at most 480"), "{err}");
    let err = connection_caps(64, None, None).unwrap_err();
    assert!(err.to_string().contains("no room"), "{err}");
    assert!(connection_caps(1024, Some(10), Some(11)).is_err());
    assert!(connection_caps(1024, Some(0), None).is_err());
    assert!(connection_caps(1024, None, Some(0)).is_err());
}

#[test]
fn limits_refuse_zero_timeouts_and_a_budget_below_the_body_cap() {
    let raw: RawConfig = toml::from_str("[limits]\nidle_timeout = \"0s\"\n").unwrap();
    let err = raw.validate().err().unwrap();
    assert!(err.to_string().starts_with("limits.idle_timeout"), "{err}");
    let raw: RawConfig =
        toml::from_str("[audit]\nmax_body = \"2MiB\"\n[limits]\nbody_memory = \"1MiB\"\n").unwrap();
    let err = raw.validate().err().unwrap();
    assert!(err.to_string().starts_with("limits.body_memory"), "{err}");
    let raw: RawConfig =
        toml::from_str("[audit]\nmax_batch_body = \"8MiB\"\n[limits]\nbody_memory = \"4MiB\"\n")
            .unwrap();
    let err = raw.validate().err().unwrap().to_string();
    assert!(err.contains("audit.max_batch_body"), "{err}");
    let limits = RawConfig::default().validate().unwrap().limits;
    assert_eq!(limits.body_memory, 64 << 20);
    assert!(limits.max_connections as u64 <= limits.open_file_limit);
}

/// `raw`'s `[store]` section as validated settings (or the error).
fn store_settings(store: &str) -> Result<Settings, ConfigError> {
    toml::from_str::<RawConfig>(&format!("[store]\n{store}"))
        .unwrap()
        .validate()
}

#[test]
fn store_url_selects_postgres_and_sqlite_names_a_file() {
    let settings = store_settings("url = \"postgres://syncgate@db.example/audit\"\n").unwrap();
    assert_eq!(
        settings.store,
        StoreLocation::Postgres("postgres://syncgate@db.example/audit".into())
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.db");
    for url in [
        format!("sqlite://{}", file.display()),
        format!("sqlite:{}", file.display()),
    ] {
        let settings = store_settings(&format!("url = \"{url}\"\n")).unwrap();
        assert_eq!(settings.store, StoreLocation::Sqlite(file.clone()), "{url}");
    }
    // The same file named twice is not a conflict.
    let settings = store_settings(&format!(
        "path = \"{0}\"\nurl = \"sqlite://{0}\"\n",
        file.display()
    ))
    .unwrap();
    assert_eq!(settings.store, StoreLocation::Sqlite(file));
}

#[test]
fn store_url_and_a_different_path_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    for url in [
        "postgres://syncgate@db.example/audit".to_owned(),
        format!("sqlite://{}", dir.path().join("other.db").display()),
    ] {
        let err = store_settings(&format!("path = \"{}\"\nurl = \"{url}\"\n", path.display()))
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("store.url"), "{err}");
    }
    let err = store_settings("url = \"sqlite://\"\n").err().unwrap();
    assert!(err.to_string().starts_with("store.url"), "{err}");
}

#[test]
fn a_password_file_with_sqlite_and_a_zero_statement_timeout_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = store_settings(&format!(
        "path = \"{}\"\npassword_file = \"/run/secrets/pg\"\n",
        dir.path().join("audit.db").display()
    ))
    .err()
    .unwrap();
    assert!(err.to_string().starts_with("store.password_file"), "{err}");
    let err = store_settings(
        "url = \"postgres://syncgate@db.example/audit\"\nstatement_timeout = \"0s\"\n",
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().starts_with("store.statement_timeout"),
        "{err}"
    );
    let settings = store_settings(
        "url = \"postgres://syncgate@db.example/audit\"\nstatement_timeout = \"750ms\"\n\
         migrate = false\npassword_file = \"/run/secrets/pg\"\n",
    )
    .unwrap();
    let options = settings.store_options;
    assert_eq!(options.statement_timeout, Duration::from_millis(750));
    assert!(!options.migrate);
    assert_eq!(
        options.password_file,
        Some(PathBuf::from("/run/secrets/pg"))
    );
}

#[test]
fn postgres_takes_the_token_key_from_the_data_folder_unless_one_is_named() {
    let settings = store_settings("url = \"postgres://syncgate@db.example/audit\"\n").unwrap();
    assert_eq!(
        settings.store_options.token_key,
        Some(store::default_token_key())
    );
    assert_eq!(
        store::default_token_key().parent(),
        default_store_path().parent()
    );
    // SQLite keeps its key beside the file (the store derives it).
    let dir = tempfile::tempdir().unwrap();
    let settings = store_settings(&format!(
        "path = \"{}\"\n",
        dir.path().join("audit.db").display()
    ))
    .unwrap();
    assert_eq!(settings.store_options.token_key, None);
}

#[test]
fn relative_store_files_are_taken_from_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(
        &config,
        "[store]\nurl = \"postgres://syncgate@db.example/audit\"\n\
         token_key = \"keys/token-key\"\npassword_file = \"pg-password\"\n",
    )
    .unwrap();
    let settings = RawConfig::load(&config).unwrap().validate().unwrap();
    assert_eq!(
        settings.store_options.token_key,
        Some(dir.path().join("keys/token-key"))
    );
    assert_eq!(
        settings.store_options.password_file,
        Some(dir.path().join("pg-password"))
    );
    // A SQLite file named by a relative URL is in the config folder too, like store.path.
    std::fs::write(&config, "[store]\nurl = \"sqlite://audit.db\"\n").unwrap();
    let settings = RawConfig::load(&config).unwrap().validate().unwrap();
    assert_eq!(
        settings.store,
        StoreLocation::Sqlite(dir.path().join("audit.db"))
    );
}

/// A config with one principal per `(name, roles, oid)`, each with a fresh key's hash.
fn with_principals(entries: &[(&str, &[&str], Option<&str>)]) -> RawConfig {
    use crate::admin::auth::{ApiKey, KeyHash};
    let mut raw = RawConfig::default();
    raw.proxy.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    for (name, roles, oid) in entries {
        raw.admin.principals.push(RawPrincipal {
            name: (*name).into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            oid: oid.map(str::to_owned),
            key_hash: Some(
                KeyHash::new(&ApiKey::generate().unwrap())
                    .unwrap()
                    .to_string(),
            ),
            ..RawPrincipal::default()
        });
    }
    raw
}

fn invalid_key(raw: &RawConfig) -> (&'static str, String) {
    match raw.validate() {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn principals_parse_from_toml_and_validate() {
    let text = r#"
        [admin]
        listen = "127.0.0.1:0"
        [[admin.principals]]
        name = "ann"
        roles = ["auditor", "admin", "auditor"]
        oid = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
        key_hash = "sha256:000102030405060708090a0b0c0d0e0f:0000000000000000000000000000000000000000000000000000000000000000"
    "#;
    let mut raw: RawConfig = toml::from_str(text).unwrap();
    raw.proxy.listen = "127.0.0.1:0".into();
    let settings = raw.validate().unwrap();
    assert!(!settings.admin_principals.is_empty());
    assert_eq!(
        settings.admin_principals.first_oid().as_deref(),
        Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    );
    let err = toml::from_str::<RawConfig>("[[admin.principals]]\nname = \"x\"\nkey_hash = \"h\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("missing field `roles`"), "{err}");
    let err = toml::from_str::<RawConfig>(
        "[[admin.principals]]\nname = \"x\"\nroles = []\nkey_hash = \"h\"\nkey = \"k\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `key`"), "{err}");
}

#[test]
fn metrics_public_is_a_checked_boolean_off_by_default() {
    let parse = |text: &str| toml::from_str::<RawConfig>(&format!("[admin]\n{text}\n"));
    let mut raw = parse("metrics_public = true").unwrap();
    raw.proxy.listen = "127.0.0.1:0".into();
    raw.admin.listen = "127.0.0.1:0".into();
    assert!(raw.validate().unwrap().admin_metrics_public);
    let mut default = RawConfig::default();
    default.proxy.listen = "127.0.0.1:0".into();
    default.admin.listen = "127.0.0.1:0".into();
    assert!(!default.validate().unwrap().admin_metrics_public);
    let err = parse("metrics_public = \"yes\"").unwrap_err();
    assert!(err.to_string().contains("expected a boolean"), "{err}");
    let err = parse("metric_public = true").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `metric_public`"),
        "{err}"
    );
}

#[test]
fn an_unknown_role_is_refused_with_the_entry_named() {
    let (key, message) = invalid_key(&with_principals(&[("ann", &["auditor", "root"], None)]));
    assert_eq!(key, "admin.principals.roles");
    assert!(
        message.contains("admin.principals[0] (\"ann\")") && message.contains("\"root\""),
        "{message}"
    );
}

#[test]
fn a_duplicate_name_is_refused() {
    let raw = with_principals(&[("ann", &["auditor"], None), ("ann", &["admin"], None)]);
    let (key, message) = invalid_key(&raw);
    assert_eq!(key, "admin.principals.name");
    assert!(message.contains("admin.principals[1]"), "{message}");
}

#[test]
fn a_malformed_key_hash_is_refused() {
    for bad in [
        "sgk_AAAA",
        "sha256:00:00",
        "md5:000102030405060708090a0b0c0d0e0f:00",
    ] {
        let mut raw = with_principals(&[("ann", &["auditor"], None)]);
        raw.admin.principals[0].key_hash = Some(bad.into());
        let (key, message) = invalid_key(&raw);
        assert_eq!(key, "admin.principals.key_hash", "{bad}");
        assert!(message.contains("sha256:<32 hex digits"), "{message}");
    }
    let mut raw = with_principals(&[("ann", &["auditor"], None), ("bob", &["auditor"], None)]);
    raw.admin.principals[1].key_hash = raw.admin.principals[0].key_hash.clone();
    assert_eq!(invalid_key(&raw).0, "admin.principals.key_hash");
}

#[test]
fn a_bad_oid_or_empty_name_is_refused() {
    for bad in [
        "not-a-guid",
        "aaaaaaaabbbbccccddddeeeeeeeeeeee",
        "{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}",
        "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeeg",
    ] {
        let (key, message) = invalid_key(&with_principals(&[("ann", &["auditor"], Some(bad))]));
        assert_eq!(key, "admin.principals.oid", "{bad}");
        assert!(message.contains(bad), "{message}");
    }
    assert_eq!(
        invalid_key(&with_principals(&[(" ", &["auditor"], None)])).0,
        "admin.principals.name"
    );
}

#[test]
fn principals_on_a_non_loopback_plain_admin_listener_are_refused() {
    let mut raw = with_principals(&[("ann", &["auditor"], None)]);
    raw.admin.listen = "0.0.0.0:0".into();
    let (key, message) = invalid_key(&raw);
    assert_eq!(key, "admin.listen");
    assert!(
        message.contains("bind admin.listen to loopback or configure [admin.tls]"),
        "{message}"
    );
    // Without principals the listener only serves health and readiness: allowed anywhere.
    raw.admin.principals.clear();
    assert!(raw.validate().is_ok());
    // IPv6 loopback is loopback.
    let mut raw = with_principals(&[("ann", &["auditor"], None)]);
    raw.admin.listen = "[::1]:0".into();
    assert!(raw.validate().is_ok());
}

/// The `[checkpoints]` section of `toml` validated, or the key it was refused for.
fn checkpoint_settings(
    toml: &str,
) -> Result<crate::store::CheckpointOptions, (&'static str, String)> {
    let raw = toml::from_str::<RawConfig>(toml).unwrap();
    match raw.validate() {
        Ok(settings) => Ok(settings.store_options.checkpoints),
        Err(ConfigError::Invalid { key, message }) => Err((key, message)),
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn checkpoints_default_to_signing_beside_the_log_and_witnesses_are_checked() {
    use crate::store::witness::Target;
    let options = checkpoint_settings("[store]\npath = \"/tmp/audit.db\"\n").unwrap();
    assert!(options.enabled);
    assert_eq!(options.every_events, 1000);
    assert_eq!(options.every, Duration::from_secs(60));
    assert_eq!(
        options.key,
        Some(PathBuf::from("/tmp/audit.db.checkpoint-key"))
    );
    assert!(options.witnesses.is_empty());
    let options = checkpoint_settings(
        "[checkpoints]\nevery = \"10s\"\nretry_max = \"30s\"\n\
         [[checkpoints.witness]]\nname = \"other-volume\"\nfile = \"/mnt/b/checkpoints\"\n\
         [[checkpoints.witness]]\nname = \"witness.example\"\nurl = \"https://w.example/add-checkpoint\"\ntimeout = \"3s\"\n\
         [[checkpoints.witness]]\nname = \"local-syslog\"\nsyslog = \"/dev/log\"\n\
         [[checkpoints.witness]]\nname = \"siem\"\nsyslog = \"udp://10.0.0.5:514\"\n",
    )
    .unwrap();
    assert_eq!(options.retry_max, Duration::from_secs(30));
    let targets: Vec<&Target> = options.witnesses.iter().map(|w| &w.target).collect();
    assert_eq!(
        targets,
        [
            &Target::File("/mnt/b/checkpoints".into()),
            &Target::Url("https://w.example/add-checkpoint".parse().unwrap()),
            &Target::SyslogUnix("/dev/log".into()),
            &Target::SyslogUdp("10.0.0.5:514".parse().unwrap()),
        ]
    );
    assert_eq!(options.witnesses[1].timeout, Duration::from_secs(3));
    assert!(options.witnesses.iter().all(|w| w.key.is_none()));
    // An HTTP witness's co-signing key (type 0x04); a log key (0x01) is not one.
    let cosigner = crate::audit::note::Cosigner::from_seed("w.example/1", &[3; 32]).unwrap();
    let options = checkpoint_settings(&format!(
        "[[checkpoints.witness]]\nname = \"w\"\nurl = \"https://w.example/\"\nkey = \"{}\"\n",
        cosigner.verifier_key()
    ))
    .unwrap();
    assert_eq!(
        options.witnesses[0].key.as_ref().map(|k| k.name()),
        Some("w.example/1")
    );
    let log_key = crate::audit::note::Signer::from_seed("w.example/1", &[3; 32])
        .unwrap()
        .verifier_key();
    for (toml, key) in [
        (
            format!(
                "[[checkpoints.witness]]\nname = \"a\"\nurl = \"https://w.example/\"\nkey = \"{log_key}\"\n"
            ),
            "checkpoints.witness.key",
        ),
        (
            format!(
                "[[checkpoints.witness]]\nname = \"a\"\nfile = \"/f\"\nkey = \"{}\"\n",
                cosigner.verifier_key()
            ),
            "checkpoints.witness.key",
        ),
    ] {
        let (refused, message) = checkpoint_settings(&toml).unwrap_err();
        assert_eq!(refused, key, "{toml}: {message}");
    }
    for (toml, key) in [
        ("[checkpoints]\nevery = \"0s\"\n", "checkpoints.every"),
        (
            "[checkpoints]\nevery_events = 0\n",
            "checkpoints.every_events",
        ),
        (
            "[checkpoints]\norigin = \"has space\"\n",
            "checkpoints.origin",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a\"\nfile = \"/f\"\nurl = \"https://w.example/\"\n",
            "checkpoints.witness",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a\"\n",
            "checkpoints.witness",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a b\"\nfile = \"/f\"\n",
            "checkpoints.witness.name",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a\"\nfile = \"/f\"\n[[checkpoints.witness]]\nname = \"a\"\nfile = \"/g\"\n",
            "checkpoints.witness.name",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a\"\nurl = \"ftp://w.example/\"\n",
            "checkpoints.witness.url",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a\"\nsyslog = \"log\"\n",
            "checkpoints.witness.syslog",
        ),
        (
            "[[checkpoints.witness]]\nname = \"a\"\nsyslog = \"udp://host:514\"\n",
            "checkpoints.witness.syslog",
        ),
    ] {
        let (refused, message) = checkpoint_settings(toml).unwrap_err();
        assert_eq!(refused, key, "{toml}: {message}");
    }
    let err = toml::from_str::<RawConfig>("[[checkpoints.witness]]\nname = \"a\"\nfiel = \"/f\"\n")
        .unwrap_err();
    assert!(err.to_string().contains("unknown field `fiel`"), "{err}");
}

#[test]
fn a_relative_witness_file_and_checkpoint_key_are_in_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("syncgate.toml");
    std::fs::write(
        &config,
        "[checkpoints]\nkey = \"keys/checkpoint-key\"\n\
         [[checkpoints.witness]]\nname = \"w\"\nfile = \"witnessed\"\n",
    )
    .unwrap();
    let settings = RawConfig::load(&config).unwrap().validate().unwrap();
    let options = settings.store_options.checkpoints;
    assert_eq!(options.key, Some(dir.path().join("keys/checkpoint-key")));
    assert_eq!(
        options.witnesses[0].target,
        crate::store::witness::Target::File(dir.path().join("witnessed"))
    );
}

/// `[approvals]` with approvers `ann` (group security) and `bob`, plus `extra`.
fn with_approvers(extra: &str) -> RawConfig {
    let hash = |n: u8| {
        format!(
            "sha256:{}:{}",
            format!("{n:02x}").repeat(16),
            "00".repeat(32)
        )
    };
    let text = format!(
        r#"
        [admin]
        listen = "127.0.0.1:0"
        [[admin.principals]]
        name = "ann"
        roles = ["approver"]
        oid = "aaaaaaaa-0000-4000-8000-000000000001"
        groups = ["security"]
        key_hash = "{}"
        [[admin.principals]]
        name = "bob"
        roles = ["approver"]
        oid = "bbbbbbbb-0000-4000-8000-000000000002"
        key_hash = "{}"
        [[admin.principals]]
        name = "eve"
        roles = ["auditor"]
        oid = "eeeeeeee-0000-4000-8000-000000000005"
        key_hash = "{}"
        [[admin.principals]]
        name = "nooid"
        roles = ["approver"]
        key_hash = "{}"
        {extra}
        "#,
        hash(1),
        hash(2),
        hash(3),
        hash(4)
    );
    let mut raw: RawConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    raw.proxy.listen = "127.0.0.1:0".into();
    raw
}

const HOLDING_RULE: &str = r#"
        [[rules.builtin]]
        id = "sync-allowlist"
        type = "partner_allowlist"
        action = "require_approval"
        partners = []
"#;

#[test]
fn an_approval_policy_is_checked_against_the_principals_that_could_satisfy_it() {
    let ok = with_approvers(&format!(
        "{HOLDING_RULE}\n[approvals.policies.default]\nrequired = 2\nvote_window = \"2h\"\n"
    ));
    let settings = ok.validate().unwrap();
    let (policy, _) = settings.approvals.policy("default").unwrap();
    assert_eq!(policy.required, 2);
    assert_eq!(policy.vote_window_seconds, 7200);
    assert_eq!(policy.send_window_seconds, 3600, "the default send window");
    let cases = [
        (
            "[approvals.policies.default]\nrequired = 3\n",
            "approvals.policies.required",
            "only 2 principal(s)",
        ),
        (
            "[approvals.policies.default]\napprovers = [\"zed\"]\n",
            "approvals.policies.approvers",
            "\"zed\" is not an admin principal",
        ),
        (
            "[approvals.policies.default]\napprovers = [\"eve\"]\n",
            "approvals.policies.approvers",
            "does not have the approver role",
        ),
        (
            "[approvals.policies.default]\napprovers = [\"nooid\"]\n",
            "approvals.policies.approvers",
            "has no oid",
        ),
        (
            "[approvals.policies.default]\none_from_each = [\"identity\"]\n",
            "approvals.policies.one_from_each",
            "group \"identity\"",
        ),
        (
            "[approvals.policies.default]\nrequired = 0\n",
            "approvals.policies.required",
            "at least 1",
        ),
        (
            "[approvals.policies.default]\nticket_pattern = \"CHG(\"\n",
            "approvals.policies.ticket_pattern",
            "",
        ),
        (
            "[approvals.policies.other]\n",
            "rules.approval_policy",
            "[approvals.policies.default] is not configured",
        ),
        (
            "[approvals.policies.default]\n[[approvals.webhooks]]\nname = \"t\"\nurl = \"ftp://x\"\n",
            "approvals.webhooks.url",
            "not an http:// or https:// URL",
        ),
        (
            "[approvals.policies.default]\n[[approvals.webhooks]]\nname = \"t\"\nurl = \"http://x\"\nformat = \"irc\"\n",
            "approvals.webhooks.format",
            "unknown format",
        ),
        (
            "[approvals.policies.default]\n[[approvals.webhooks]]\nname = \"t\"\nurl = \"http://x\"\n[[approvals.webhooks]]\nname = \"t\"\nurl = \"http://y\"\n",
            "approvals.webhooks.name",
            "used twice",
        ),
    ];
    for (toml, key, says) in cases {
        let raw = with_approvers(&format!("{HOLDING_RULE}\n{toml}"));
        let (got, message) = invalid_key(&raw);
        assert_eq!(got, key, "{toml}: {message}");
        assert!(message.contains(says), "{toml}: {message}");
    }
}

#[test]
fn only_a_rule_that_holds_for_approval_may_name_a_policy() {
    let raw = with_approvers(
        "[[rules.builtin]]\nid = \"r\"\ntype = \"partner_allowlist\"\npartners = []\n\
         approval_policy = \"default\"\n[approvals.policies.default]\n",
    );
    match raw.validate() {
        Err(ConfigError::Rules { source, .. }) => {
            assert!(
                source.to_string().contains("approval_policy applies only"),
                "{source}"
            );
        }
        other => panic!("expected a rules error, got {other:?}"),
    }
    let named = with_approvers(&format!(
        "{}approval_policy = \"two\"\n[approvals.policies.two]\nrequired = 2\n",
        HOLDING_RULE.trim_end().to_owned() + "\n"
    ));
    named.validate().unwrap();
}

#[test]
fn workers_default_to_one_per_core_and_are_bounded() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = RawConfig::default().validate().unwrap();
    assert_eq!(settings.workers, cores);
    let parse = |text: &str| toml::from_str::<RawConfig>(text).unwrap().validate();
    assert_eq!(parse("[proxy]\nworkers = 0\n").unwrap().workers, 0);
    assert_eq!(parse("[proxy]\nworkers = 3\n").unwrap().workers, 3);
    let err = parse("[proxy]\nworkers = 100000\n").err().unwrap();
    assert!(err.to_string().contains("proxy.workers"), "{err}");
}

#[test]
fn the_access_log_is_off_unless_asked_for_and_a_lone_path_is_a_mistake() {
    let parse = |text: &str| toml::from_str::<RawConfig>(text).unwrap().validate();
    assert_eq!(parse("").unwrap().access_log, None);
    assert_eq!(
        parse("[log]\naccess = true\n").unwrap().access_log,
        Some(crate::access_log::Destination::Stdout)
    );
    let mut raw =
        toml::from_str::<RawConfig>("[log]\naccess = true\naccess_path = \"logs/access.log\"\n")
            .unwrap();
    raw.resolve_paths(Path::new("/etc/syncgate"));
    assert_eq!(
        raw.validate().unwrap().access_log,
        Some(crate::access_log::Destination::File(PathBuf::from(
            "/etc/syncgate/logs/access.log"
        )))
    );
    let err = parse("[log]\naccess_path = \"access.log\"\n")
        .err()
        .unwrap();
    assert!(err.to_string().contains("log.access_path"), "{err}");
}
