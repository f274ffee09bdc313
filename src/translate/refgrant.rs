//! ReferenceGrant checks for cross-namespace references.

use crate::inputs::Inputs;

/// One side of a reference.
pub struct Ref<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// Whether a reference from `from` to the object `to_name` of `to` is allowed:
/// always within a namespace, otherwise only if a ReferenceGrant in the
/// target namespace permits it.
pub fn permits(inputs: &Inputs, from: &Ref<'_>, to: &Ref<'_>, to_name: &str) -> bool {
    from.namespace == to.namespace || granting(inputs, from, to, to_name).is_some()
}

/// The first ReferenceGrant (by name) in the target namespace that allows a
/// cross-namespace reference.
pub fn granting<'i>(
    inputs: &'i Inputs,
    from: &Ref<'_>,
    to: &Ref<'_>,
    to_name: &str,
) -> Option<&'i crate::inputs::ObjKey> {
    inputs
        .reference_grants
        .range(crate::inputs::ObjKey::new(to.namespace, "")..)
        .take_while(|(k, _)| k.namespace == to.namespace)
        .find(|(key, grant)| {
            let from_ok = grant.spec.from.iter().any(|f| {
                norm(&f.group) == norm(from.group)
                    && f.kind == from.kind
                    && f.namespace == from.namespace
            });
            let to_ok = grant.spec.to.iter().any(|t| {
                norm(&t.group) == norm(to.group)
                    && t.kind == to.kind
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == to_name)
            });
            // A grant the API server would have refused grants nothing.
            from_ok
                && to_ok
                && super::validate::stored(inputs, crate::inputs::Kind::ReferenceGrant, key)
                    .is_empty()
        })
        .map(|(key, _)| key)
}

/// The core group may be spelled "" or "core".
fn norm(g: &str) -> &str {
    if g == "core" {
        ""
    } else {
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::DEFAULT_CONTROLLER_NAME;
    use serde_json::json;

    #[test]
    fn grant_scopes_by_namespace_kind_and_name() {
        let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
        inputs
            .insert_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
                "metadata": {"name": "g", "namespace": "backend"},
                "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "apps"}],
                         "to": [{"group": "", "kind": "Service", "name": "svc"}]}
            }))
            .expect("decodes");
        let from = Ref {
            group: "gateway.networking.k8s.io",
            kind: "HTTPRoute",
            namespace: "apps",
        };
        let to = Ref {
            group: "",
            kind: "Service",
            namespace: "backend",
        };
        assert!(permits(&inputs, &from, &to, "svc"));
        assert!(!permits(&inputs, &from, &to, "other"));
        let other_ns = Ref {
            group: "gateway.networking.k8s.io",
            kind: "HTTPRoute",
            namespace: "evil",
        };
        assert!(!permits(&inputs, &other_ns, &to, "svc"));
        let grpc = Ref {
            group: "gateway.networking.k8s.io",
            kind: "GRPCRoute",
            namespace: "apps",
        };
        assert!(!permits(&inputs, &grpc, &to, "svc"));
        let same = Ref {
            group: "",
            kind: "Service",
            namespace: "apps",
        };
        assert!(permits(&inputs, &from, &same, "anything"));
    }
}
