//! The Graph surface: one request in, one [`Outcome`] out.
//!
//! [`dispatch`] runs the same steps for a top-level request and for a `$batch` sub-request, in
//! the order Graph's layers plausibly apply them ([I]): version → token → path → method → query
//! options → permission → body → state. Each step fails with the Graph error of its layer, so a
//! request with several faults reports the outermost one, as a gateway in front of the directory
//! would.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::Emulator;
use super::auth::{self, Access, Area};
use super::batch;
use super::odata::{self, Failure, Outcome, Projection, QueryOptions, Reply};
use super::path::{self, Resource, TenantId, Version};
use super::schema::{
    ACCESS_POLICY, Access as PropertyAccess, IDENTITY_SYNCHRONIZATION, PARTNER, SYNC_POLICY,
    StructuredType, TEMPLATE,
};
use super::state::{self, Doc, State};
use super::validate;
pub(crate) use crate::graph_error::method_not_allowed;
use crate::graph_error::{GraphError, RequestIds};

mod deleted;
mod partners;

/// A Graph request with its body read: top-level, or rebuilt from a `$batch` entry.
#[derive(Debug)]
pub(crate) struct GraphRequest {
    pub(crate) method: Method,
    /// The path as received, still percent-encoded.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The ids error bodies carry.
    pub(crate) ids: RequestIds,
}

/// Whether a request came inside a `$batch` (which may not nest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nesting {
    TopLevel,
    InBatch,
}

/// One emulated operation: a resource and a method that fit together.
#[derive(Debug)]
pub(crate) enum Op {
    Batch,
    GetAccessPolicy,
    ListPartners,
    CreatePartner,
    GetPartner(TenantId),
    UpdatePartner(TenantId),
    DeletePartner(TenantId),
    GetSync(TenantId),
    CreateSync(TenantId),
    UpdateSync(TenantId),
    DeleteSync(TenantId),
    GetTemplate,
    UpdateTemplate,
    ResetTemplate,
    ListDeletedPartners,
    GetDeletedPartner(TenantId),
    RestorePartner(TenantId),
    PurgePartner(TenantId),
    GetDeletedPartnerSync(TenantId),
    RestoreDeletedPartnerSync(TenantId),
    ListDeletedSyncPolicies,
    GetDeletedSyncPolicy(TenantId),
    RestoreSyncPolicy(TenantId),
    PurgeSyncPolicy(TenantId),
}

impl Op {
    fn access(&self) -> Access {
        match self {
            Op::GetAccessPolicy
            | Op::ListPartners
            | Op::GetPartner(_)
            | Op::GetSync(_)
            | Op::GetTemplate
            | Op::ListDeletedPartners
            | Op::GetDeletedPartner(_)
            | Op::GetDeletedPartnerSync(_)
            | Op::ListDeletedSyncPolicies
            | Op::GetDeletedSyncPolicy(_) => Access::Read,
            _ => Access::Write,
        }
    }

    fn area(&self) -> Area {
        match self {
            Op::GetTemplate | Op::UpdateTemplate | Op::ResetTemplate => Area::MultiTenantTemplate,
            _ => Area::CrossTenantAccess,
        }
    }

    /// Writes whose JSON body Graph reads; actions (`restore`, `resetToDefaultSettings`) take
    /// none and ignore one.
    fn takes_body(&self) -> bool {
        matches!(
            self,
            Op::CreatePartner
                | Op::UpdatePartner(_)
                | Op::CreateSync(_)
                | Op::UpdateSync(_)
                | Op::UpdateTemplate
        )
    }
}

/// Answer one Graph request (see the module docs for the order of checks).
pub(crate) fn dispatch(emulator: &Emulator, req: &GraphRequest, nesting: Nesting) -> Outcome {
    let segments = path::segments(&req.path)?;
    let version = path::version(segments.first().map(String::as_str))?;
    let caller = auth::authenticate(&req.headers)?;
    let resource = path::resource(version, segments.get(1..).unwrap_or_default())?;
    let op = operation(resource, &req.method)?;
    if let Op::Batch = op {
        if nesting == Nesting::InBatch {
            return Err(
                bad_request("BadRequest", "Nested $batch requests are not supported.").into(),
            );
        }
        let envelope = validate::json_body(&req.headers, &req.body)?;
        return batch::run(emulator, version, req, envelope);
    }
    let options = QueryOptions::parse(version, req.query.as_deref())?;
    auth::authorize(&caller, op.access(), op.area())?;
    let body = if op.takes_body() {
        Some(validate::json_body(&req.headers, &req.body)?)
    } else {
        None
    };
    let access = op.access();
    let mut state = emulator.state();
    let outcome = execute(&mut state, version, op, &options, body);
    if access == Access::Write && outcome.is_ok() {
        state.writes += 1;
    }
    outcome
}

pub(crate) fn operation(resource: Resource, method: &Method) -> Result<Op, Failure> {
    // Methods are case-sensitive tokens: `get` is not `GET`, as in Graph.
    let op = match (resource, method.as_str()) {
        (Resource::NotEmulated, _) => {
            return Err(GraphError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "The Graph emulator does not implement this resource.",
            )
            .into());
        }
        (Resource::Batch, "POST") => Op::Batch,
        (Resource::AccessPolicy, "GET") => Op::GetAccessPolicy,
        (Resource::Partners, "GET") => Op::ListPartners,
        (Resource::Partners, "POST") => Op::CreatePartner,
        (Resource::Partner(id), "GET") => Op::GetPartner(id),
        (Resource::Partner(id), "PATCH") => Op::UpdatePartner(id),
        (Resource::Partner(id), "DELETE") => Op::DeletePartner(id),
        (Resource::PartnerSync(id), "GET") => Op::GetSync(id),
        (Resource::PartnerSync(id), "PUT") => Op::CreateSync(id),
        (Resource::PartnerSync(id), "PATCH") => Op::UpdateSync(id),
        (Resource::PartnerSync(id), "DELETE") => Op::DeleteSync(id),
        (Resource::Template, "GET") => Op::GetTemplate,
        (Resource::Template, "PATCH") => Op::UpdateTemplate,
        (Resource::TemplateReset, "POST") => Op::ResetTemplate,
        (Resource::DeletedPartners, "GET") => Op::ListDeletedPartners,
        (Resource::DeletedPartner(id), "GET") => Op::GetDeletedPartner(id),
        (Resource::DeletedPartner(id), "DELETE") => Op::PurgePartner(id),
        (Resource::DeletedPartnerRestore(id), "POST") => Op::RestorePartner(id),
        (Resource::DeletedPartnerSync(id), "GET") => Op::GetDeletedPartnerSync(id),
        (Resource::DeletedPartnerSyncRestore(id), "POST") => Op::RestoreDeletedPartnerSync(id),
        (Resource::DeletedSyncPolicies, "GET") => Op::ListDeletedSyncPolicies,
        (Resource::DeletedSyncPolicy(id), "GET") => Op::GetDeletedSyncPolicy(id),
        (Resource::DeletedSyncPolicy(id), "DELETE") => Op::PurgeSyncPolicy(id),
        (Resource::DeletedSyncPolicyRestore(id), "POST") => Op::RestoreSyncPolicy(id),
        _ => return Err(method_not_allowed().into()),
    };
    Ok(op)
}

fn bad_request(code: &str, message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, code, message)
}

const PARTNERS: &str = "policies/crossTenantAccessPolicy/partners";
const TEMPLATE_PATH: &str =
    "policies/crossTenantAccessPolicy/templates/multiTenantOrganizationIdentitySynchronization";
const DELETED_PARTNERS: &str = "policies/deletedItems/crossTenantPartners";
const DELETED_SYNC_POLICIES: &str = "policies/deletedItems/crossTenantSyncPolicyPartners";

/// Run `op` against the state: one function per resource in `partners.rs` (partners and their
/// sync policies) and `deleted.rs` (deleted items); one-call operations inline.
fn execute(
    state: &mut State,
    version: Version,
    op: Op,
    options: &QueryOptions,
    body: Option<Value>,
) -> Outcome {
    let body = body.unwrap_or(Value::Null);
    match op {
        // Handled by `dispatch` before any state is touched.
        Op::Batch => Err(method_not_allowed().into()),
        Op::GetAccessPolicy => access_policy(version, options),
        Op::ListPartners => partners::list(state, version, options),
        Op::GetPartner(id) => partners::get(state, version, options, &id),
        Op::CreatePartner => partners::create(state, version, body),
        Op::UpdatePartner(id) => partners::update(state, version, &id, body),
        Op::DeletePartner(id) => {
            state.delete_partner(&id)?;
            Ok(Reply::no_content())
        }
        Op::GetSync(id) => partners::get_sync(state, version, options, &id),
        Op::CreateSync(id) => partners::create_sync(state, version, &id, body),
        Op::UpdateSync(id) => partners::update_sync(state, version, &id, body),
        Op::DeleteSync(id) => {
            state.delete_sync_policy(&id)?;
            Ok(Reply::no_content())
        }
        Op::GetTemplate => template(state, version, options),
        Op::UpdateTemplate => {
            let mut props = validate::check_entity(&TEMPLATE, body, version, "")?;
            drop_read_only(&TEMPLATE, &mut props, state.template())?;
            state.update_template(props);
            Ok(Reply::no_content())
        }
        Op::ResetTemplate => {
            state.reset_template();
            Ok(Reply::no_content())
        }
        Op::ListDeletedPartners => deleted::list_partners(state, version, options),
        Op::GetDeletedPartner(id) => deleted::get_partner(state, version, options, &id),
        Op::RestorePartner(id) => deleted::restore_partner(state, version, &id),
        Op::PurgePartner(id) => {
            state.purge_partner(&id)?;
            Ok(Reply::no_content())
        }
        // A partner must lose its sync policy before it can be deleted, so a deleted partner
        // never has one: the SDK-generated path (§2.4 D9) always finds nothing.
        Op::GetDeletedPartnerSync(id) | Op::RestoreDeletedPartnerSync(id) => {
            Err(state::not_found(&id).into())
        }
        Op::ListDeletedSyncPolicies => deleted::list_sync_policies(state, version, options),
        Op::GetDeletedSyncPolicy(id) => deleted::get_sync_policy(state, version, options, &id),
        Op::RestoreSyncPolicy(id) => deleted::restore_sync_policy(state, version, &id),
        Op::PurgeSyncPolicy(id) => {
            state.purge_sync_policy(&id)?;
            Ok(Reply::no_content())
        }
    }
}

/// `GET …/policies/crossTenantAccessPolicy`: a fixed document (the emulator models only what
/// lies below it).
fn access_policy(version: Version, options: &QueryOptions) -> Outcome {
    let p = Projection::resolve(options, &ACCESS_POLICY, version, false)?;
    let doc = object(json!({
        "id": "5bd1ec6a-1d5c-4b3e-9bd3-6f6b1a3d1c2e",
        "displayName": "CrossTenantAccessPolicy",
        "allowedCloudEndpoints": [],
    }));
    let fragment = format!(
        "policies/crossTenantAccessPolicy{}/$entity",
        p.context_suffix()
    );
    Ok(entity(version, &fragment, p.apply(doc)))
}

/// `GET …/templates/multiTenantOrganizationIdentitySynchronization`.
fn template(state: &State, version: Version, options: &QueryOptions) -> Outcome {
    let p = Projection::resolve(options, &TEMPLATE, version, false)?;
    let fragment = format!("{TEMPLATE_PATH}{}/$entity", p.context_suffix());
    Ok(entity(
        version,
        &fragment,
        p.apply(state.template().clone()),
    ))
}

/// A checked sync-policy body (PUT, PATCH, or nested in a partner write). A `tenantId` member is
/// accepted only when it repeats the URL key ([I], §3.4).
fn sync_body(
    value: Value,
    id: &TenantId,
    version: Version,
    nested: bool,
    current: &Doc,
) -> Result<Doc, GraphError> {
    let prefix = if nested {
        "identitySynchronization."
    } else {
        ""
    };
    let mut props = validate::check_entity(&SYNC_POLICY, value, version, prefix)?;
    if let Some(key) = props.remove("tenantId")
        && !same_tenant(&key, id)
    {
        return Err(bad_request(
            "Request_BadRequest",
            format!(
                "The tenantId in the request body does not match the tenant ID '{id}' in the request URL."
            ),
        ));
    }
    drop_read_only(&SYNC_POLICY, &mut props, current)?;
    Ok(props)
}

fn same_tenant(value: &Value, id: &TenantId) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case(id.as_str()))
}

/// Remove read-only members that are null or repeat the current value (clients that send back
/// what they read); any other value is an attempt to change them.
fn drop_read_only(ty: &StructuredType, props: &mut Doc, current: &Doc) -> Result<(), GraphError> {
    for property in ty
        .properties
        .iter()
        .filter(|p| p.access == PropertyAccess::ReadOnly)
    {
        if let Some(value) = props.remove(property.name)
            && !value.is_null()
            && current.get(property.name) != Some(&value)
        {
            return Err(read_only(property.name));
        }
    }
    Ok(())
}

fn read_only(name: &str) -> GraphError {
    bad_request(
        "Request_BadRequest",
        format!("Property '{name}' is read-only and cannot be changed."),
    )
}

/// A partner as `version` sees it, projected, with its sync policy when expanded.
fn partner_view(doc: &Doc, sync: Option<&Doc>, version: Version, projection: &Projection) -> Doc {
    let mut view = projection.apply(PARTNER.view(doc, version));
    if projection.expand_sync {
        let expanded = sync.map_or(Value::Null, |s| Value::Object(SYNC_POLICY.view(s, version)));
        view.insert(IDENTITY_SYNCHRONIZATION.into(), expanded);
    }
    view
}

fn object(value: Value) -> Doc {
    match value {
        Value::Object(map) => map,
        _ => Doc::new(),
    }
}

fn entity(version: Version, fragment: &str, doc: Doc) -> Reply {
    entity_with_status(StatusCode::OK, version, fragment, doc)
}

fn entity_with_status(status: StatusCode, version: Version, fragment: &str, doc: Doc) -> Reply {
    Reply::json(
        status,
        &odata::with_context(odata::context(version, fragment), doc),
    )
}

fn collection(version: Version, fragment: &str, value: Vec<Value>) -> Reply {
    let mut doc = Map::new();
    doc.insert("value".into(), Value::Array(value));
    entity(version, fragment, doc)
}
