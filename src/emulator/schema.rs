//! The Graph types the emulator stores, as data: property names, kinds, and which API version
//! has them.
//!
//! One table drives strict body checking (`validate`), `$select`, the shape of stored documents
//! (every property present, null when unset, in the order Graph writes them) and the v1.0 view
//! of a beta-shaped document. Documents are stored in their beta shape, the superset, because a
//! v1.0 and a beta call reach the same directory object.
//!
//! Where the reference lists a property without its type (`m365Collaboration*`,
//! `appServiceConnectInbound`) it is an [`Kind::OpenComplex`]: any object is accepted, since a
//! guessed schema would refuse calls that Graph accepts.

use serde_json::{Map, Value};

use super::path::Version;

/// The kind of a property's value.
#[derive(Debug)]
pub(crate) enum Kind {
    Boolean,
    String,
    DateTimeOffset,
    /// A single enum member.
    Enum(&'static EnumType),
    /// A flags enum: comma-separated members (`"newPartners,existingPartners"`).
    Flags(&'static EnumType),
    Complex(&'static StructuredType),
    /// A declared complex property whose type the reference does not give.
    OpenComplex,
    Collection(&'static Kind),
}

impl Kind {
    /// The type name Graph's error messages use.
    pub(crate) fn type_name(&self) -> String {
        match self {
            Kind::Boolean => "Edm.Boolean".into(),
            Kind::String => "Edm.String".into(),
            Kind::DateTimeOffset => "Edm.DateTimeOffset".into(),
            Kind::Enum(e) | Kind::Flags(e) => e.name.into(),
            Kind::Complex(t) => t.name.into(),
            Kind::OpenComplex => "Edm.ComplexType".into(),
            Kind::Collection(inner) => format!("Collection({})", inner.type_name()),
        }
    }
}

#[derive(Debug)]
pub(crate) struct EnumType {
    pub(crate) name: &'static str,
    pub(crate) members: &'static [&'static str],
}

/// Who may write a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    /// The entity key: set by the URL (or, for partners, once by POST); callers check it.
    Key,
    /// Set by the service; a body may repeat the current value but not change it.
    ReadOnly,
}

#[derive(Debug)]
pub(crate) struct Property {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) nullable: bool,
    pub(crate) beta_only: bool,
    pub(crate) access: Access,
}

impl Property {
    const fn new(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            nullable: true,
            beta_only: false,
            access: Access::ReadWrite,
        }
    }

    const fn beta(mut self) -> Self {
        self.beta_only = true;
        self
    }

    const fn key(mut self) -> Self {
        self.access = Access::Key;
        self.nullable = false;
        self
    }

    const fn read_only(mut self) -> Self {
        self.access = Access::ReadOnly;
        self
    }

    const fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }

    pub(crate) fn in_version(&self, version: Version) -> bool {
        !self.beta_only || version == Version::Beta
    }
}

/// An entity or complex type: its qualified name and its properties in Graph's output order.
#[derive(Debug)]
pub(crate) struct StructuredType {
    pub(crate) name: &'static str,
    pub(crate) properties: &'static [Property],
}

impl StructuredType {
    /// The property with exactly this name (Graph is case-sensitive here, §9) in this version.
    pub(crate) fn property(&self, name: &str, version: Version) -> Option<&'static Property> {
        self.properties
            .iter()
            .find(|p| p.name == name && p.in_version(version))
    }

    /// A document with every property null, in output order.
    pub(crate) fn blank(&self) -> Map<String, Value> {
        self.properties
            .iter()
            .map(|p| (p.name.to_owned(), Value::Null))
            .collect()
    }

    /// `doc` as a client of `version` sees it: beta-only properties removed for v1.0.
    pub(crate) fn view(&self, doc: &Map<String, Value>, version: Version) -> Map<String, Value> {
        doc.iter()
            .filter(|(name, _)| {
                self.properties
                    .iter()
                    .find(|p| p.name == name.as_str())
                    .is_none_or(|p| p.in_version(version))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Apply a checked PATCH body: complex values merge recursively (so
    /// `{"automaticUserConsentSettings":{"inboundAllowed":true}}` keeps `outboundAllowed`);
    /// everything else, collections included, is replaced.
    pub(crate) fn merge(&self, target: &mut Map<String, Value>, patch: Map<String, Value>) {
        for (name, value) in patch {
            let kind = self
                .properties
                .iter()
                .find(|p| p.name == name)
                .map(|p| &p.kind);
            match (kind, target.get_mut(&name), value) {
                (Some(Kind::Complex(ty)), Some(Value::Object(current)), Value::Object(part)) => {
                    ty.merge(current, part);
                }
                (kind, _, value) => {
                    let filled = match kind {
                        Some(kind) => fill(kind, value),
                        None => value,
                    };
                    target.insert(name, filled);
                }
            }
        }
    }
}

/// A value as stored: complex objects carry every declared property (null when unset), as Graph
/// serialises them.
fn fill(kind: &Kind, value: Value) -> Value {
    match (kind, value) {
        (Kind::Complex(ty), Value::Object(part)) => {
            let mut full = ty.blank();
            ty.merge(&mut full, part);
            Value::Object(full)
        }
        (Kind::Collection(inner), Value::Array(items)) => {
            Value::Array(items.into_iter().map(|v| fill(inner, v)).collect())
        }
        (_, value) => value,
    }
}

static TARGET_ACCESS_TYPE: EnumType = EnumType {
    name: "microsoft.graph.crossTenantAccessPolicyTargetConfigurationAccessType",
    members: &["allowed", "blocked", "unknownFutureValue"],
};

static TARGET_TYPE: EnumType = EnumType {
    name: "microsoft.graph.crossTenantAccessPolicyTargetType",
    members: &["user", "group", "application", "unknownFutureValue"],
};

static TEMPLATE_APPLICATION_LEVEL: EnumType = EnumType {
    name: "microsoft.graph.templateApplicationLevel",
    members: &[
        "none",
        "newPartners",
        "existingPartners",
        "unknownFutureValue",
    ],
};

static TARGET: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicyTarget",
    properties: &[
        Property::new("target", Kind::String),
        Property::new("targetType", Kind::Enum(&TARGET_TYPE)),
    ],
};

static TARGETS: Kind = Kind::Complex(&TARGET);

static TARGET_CONFIGURATION: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicyTargetConfiguration",
    properties: &[
        Property::new("accessType", Kind::Enum(&TARGET_ACCESS_TYPE)),
        Property::new("targets", Kind::Collection(&TARGETS)),
    ],
};

static B2B_SETTING: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicyB2BSetting",
    properties: &[
        Property::new("usersAndGroups", Kind::Complex(&TARGET_CONFIGURATION)),
        Property::new("applications", Kind::Complex(&TARGET_CONFIGURATION)),
    ],
};

static DEVICES_FILTER: StructuredType = StructuredType {
    name: "microsoft.graph.devicesFilter",
    properties: &[
        // Its enum's members are not in the reference; any string is accepted.
        Property::new("mode", Kind::String),
        Property::new("rule", Kind::String),
    ],
};

static TENANT_RESTRICTIONS: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicyTenantRestrictions",
    properties: &[
        Property::new("usersAndGroups", Kind::Complex(&TARGET_CONFIGURATION)),
        Property::new("applications", Kind::Complex(&TARGET_CONFIGURATION)),
        Property::new("devices", Kind::Complex(&DEVICES_FILTER)),
    ],
};

static INBOUND_TRUST: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicyInboundTrust",
    properties: &[
        Property::new("isMfaAccepted", Kind::Boolean),
        Property::new("isCompliantDeviceAccepted", Kind::Boolean),
        Property::new("isHybridAzureADJoinedDeviceAccepted", Kind::Boolean),
    ],
};

static INBOUND_OUTBOUND: StructuredType = StructuredType {
    name: "microsoft.graph.inboundOutboundPolicyConfiguration",
    properties: &[
        Property::new("inboundAllowed", Kind::Boolean),
        Property::new("outboundAllowed", Kind::Boolean),
    ],
};

/// Undeclared in the schema docs but present in real responses (§3.4); same two members.
static CROSS_CLOUD_MEETING: StructuredType = StructuredType {
    name: "microsoft.graph.crossCloudMeetingConfiguration",
    properties: &[
        Property::new("inboundAllowed", Kind::Boolean),
        Property::new("outboundAllowed", Kind::Boolean),
    ],
};

static USER_SYNC_INBOUND: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantUserSyncInbound",
    properties: &[Property::new("isSyncAllowed", Kind::Boolean)],
};

static GROUP_SYNC_INBOUND: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantGroupSyncInbound",
    // Declared Nullable="false" in the beta CSDL (§4.2).
    properties: &[Property::new("isSyncAllowed", Kind::Boolean).not_null()],
};

/// `crossTenantAccessPolicyConfigurationPartner`, in the order of §4.3's POST sample, then the
/// other documented properties, then beta's.
pub(crate) static PARTNER: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicyConfigurationPartner",
    properties: &[
        Property::new("tenantId", Kind::String).key(),
        Property::new("isServiceProvider", Kind::Boolean),
        Property::new("isInMultiTenantOrganization", Kind::Boolean),
        Property::new("inboundTrust", Kind::Complex(&INBOUND_TRUST)),
        Property::new("b2bCollaborationOutbound", Kind::Complex(&B2B_SETTING)),
        Property::new("b2bCollaborationInbound", Kind::Complex(&B2B_SETTING)),
        Property::new("b2bDirectConnectOutbound", Kind::Complex(&B2B_SETTING)),
        Property::new("b2bDirectConnectInbound", Kind::Complex(&B2B_SETTING)),
        Property::new("tenantRestrictions", Kind::Complex(&TENANT_RESTRICTIONS)),
        Property::new("m365CollaborationOutbound", Kind::OpenComplex),
        Property::new("m365CollaborationInbound", Kind::OpenComplex),
        Property::new("appServiceConnectInbound", Kind::OpenComplex),
        Property::new(
            "crossCloudMeetingConfiguration",
            Kind::Complex(&CROSS_CLOUD_MEETING),
        ),
        Property::new(
            "automaticUserConsentSettings",
            Kind::Complex(&INBOUND_OUTBOUND),
        ),
        Property::new("blockServiceProviderOutboundAccess", Kind::Boolean).beta(),
        Property::new("deletedDateTime", Kind::DateTimeOffset)
            .beta()
            .read_only(),
    ],
};

/// The partner's navigation property, expandable and deep-insertable.
pub(crate) const IDENTITY_SYNCHRONIZATION: &str = "identitySynchronization";

/// `crossTenantIdentitySyncPolicyPartner`, key order from §4.2.
pub(crate) static SYNC_POLICY: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantIdentitySyncPolicyPartner",
    properties: &[
        Property::new("tenantId", Kind::String).key(),
        Property::new("displayName", Kind::String),
        Property::new("deletedDateTime", Kind::DateTimeOffset)
            .beta()
            .read_only(),
        Property::new("externalCloudAuthorizedApplicationId", Kind::String).beta(),
        Property::new("userSyncInbound", Kind::Complex(&USER_SYNC_INBOUND)),
        Property::new("groupSyncInbound", Kind::Complex(&GROUP_SYNC_INBOUND)).beta(),
    ],
};

/// `multiTenantOrganizationIdentitySyncPolicyTemplate` (§2.5).
pub(crate) static TEMPLATE: StructuredType = StructuredType {
    name: "microsoft.graph.multiTenantOrganizationIdentitySyncPolicyTemplate",
    properties: &[
        Property::new("id", Kind::String).read_only(),
        Property::new(
            "templateApplicationLevel",
            Kind::Flags(&TEMPLATE_APPLICATION_LEVEL),
        ),
        Property::new("userSyncInbound", Kind::Complex(&USER_SYNC_INBOUND)),
    ],
};

static STRINGS: Kind = Kind::String;

/// The `crossTenantAccessPolicy` singleton, read-only here.
pub(crate) static ACCESS_POLICY: StructuredType = StructuredType {
    name: "microsoft.graph.crossTenantAccessPolicy",
    properties: &[
        Property::new("id", Kind::String).read_only(),
        Property::new("displayName", Kind::String),
        Property::new("allowedCloudEndpoints", Kind::Collection(&STRINGS)),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_keeps_unmentioned_members_of_complex_values() {
        let mut doc = PARTNER.blank();
        PARTNER.merge(
            &mut doc,
            map(json!({"automaticUserConsentSettings": {"inboundAllowed": true}})),
        );
        assert_eq!(
            doc["automaticUserConsentSettings"],
            json!({"inboundAllowed": true, "outboundAllowed": null})
        );
        PARTNER.merge(
            &mut doc,
            map(json!({"automaticUserConsentSettings": {"outboundAllowed": false}})),
        );
        assert_eq!(
            doc["automaticUserConsentSettings"],
            json!({"inboundAllowed": true, "outboundAllowed": false})
        );
        PARTNER.merge(&mut doc, map(json!({"automaticUserConsentSettings": null})));
        assert_eq!(doc["automaticUserConsentSettings"], Value::Null);
    }

    #[test]
    fn merge_fills_nested_collections_and_keeps_key_order() {
        let mut doc = PARTNER.blank();
        PARTNER.merge(
            &mut doc,
            map(json!({"b2bCollaborationInbound": {"usersAndGroups": {"targets": [{"target": "AllUsers"}]}}})),
        );
        assert_eq!(
            doc["b2bCollaborationInbound"],
            json!({
                "usersAndGroups": {"accessType": null, "targets": [{"target": "AllUsers", "targetType": null}]},
                "applications": null
            })
        );
        let keys: Vec<_> = doc.keys().map(String::as_str).collect();
        let declared: Vec<_> = PARTNER.properties.iter().map(|p| p.name).collect();
        assert_eq!(keys, declared);
    }

    #[test]
    fn v1_view_hides_beta_properties() {
        let doc = SYNC_POLICY.blank();
        let keys: Vec<_> = SYNC_POLICY
            .view(&doc, Version::V1)
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["tenantId", "displayName", "userSyncInbound"]);
        assert_eq!(SYNC_POLICY.view(&doc, Version::Beta).len(), 6);
    }
}
