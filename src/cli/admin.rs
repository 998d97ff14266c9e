//! `syncgate admin new-key`: make an API key for an admin API principal.
//!
//! The key is printed once, on stdout's first line, followed by the `[[admin.principals]]` table
//! to paste into the configuration: that table holds only the key's salted hash, so the
//! configuration file can be read by more people than may use the key. The entry is checked by
//! the configuration's own validation before anything is printed.

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::admin::auth::{ApiKey, KeyHash};
use crate::config::{RawAdmin, RawPrincipal};

/// `syncgate admin`: manage who may use the admin API.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Make a new API key: prints the key once, then the `[[admin.principals]]` lines to paste.
    NewKey(NewKeyArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NewKeyArgs {
    /// The principal's name (unique in the configuration; shown in the audit of its reads).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Comma-separated roles: auditor (read, export, verify), approver, admin (everything).
    #[arg(long, value_name = "ROLE,...", value_delimiter = ',', required = true)]
    roles: Vec<String>,
    /// The person's Entra object id (a GUID), so approvals can tell a requester from an approver.
    #[arg(long, value_name = "GUID")]
    oid: Option<String>,
}

pub(crate) fn run(args: AdminArgs) -> anyhow::Result<()> {
    match args.command {
        AdminCommand::NewKey(args) => new_key(args),
    }
}

fn new_key(args: NewKeyArgs) -> anyhow::Result<()> {
    let key = ApiKey::generate()?;
    let mut principal = RawPrincipal {
        name: args.name,
        roles: args.roles.iter().map(|r| r.trim().to_owned()).collect(),
        oid: args.oid,
        key_hash: Some(KeyHash::new(&key)?.to_string()),
        ..RawPrincipal::default()
    };
    // The same checks `serve` makes, so what is pasted is known to load.
    let admin = RawAdmin {
        principals: vec![principal.clone()],
        ..RawAdmin::default()
    };
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let checked = admin.principals(loopback).context("cannot make this key")?;
    principal.oid = checked.first_oid();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.reveal())?;
    writeln!(out)?;
    write!(out, "{}", principal_toml(&principal))?;
    out.flush()?;
    eprintln!(
        "syncgate: the API key on the first line is shown once: store it now. Clients send \
         \"Authorization: Bearer <key>\" to the admin listener; the configuration keeps only its \
         salted hash."
    );
    Ok(())
}

/// The table to paste, with every string quoted and escaped as TOML requires.
fn principal_toml(p: &RawPrincipal) -> String {
    let string = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let roles: Vec<String> = p.roles.iter().map(|r| string(r)).collect();
    let mut text = String::from(
        "# Paste into the syncgate configuration (the key's salted hash, never the key):\n\
         [[admin.principals]]\n",
    );
    text.push_str(&format!("name = {}\n", string(&p.name)));
    text.push_str(&format!("roles = [{}]\n", roles.join(", ")));
    if let Some(oid) = &p.oid {
        text.push_str(&format!("oid = {}\n", string(oid)));
    }
    if let Some(hash) = &p.key_hash {
        text.push_str(&format!("key_hash = {}\n", string(hash)));
    }
    text
}
