//! Route objects as the snapshot stores them: shared and immutable, with
//! their CRD validation ([`crate::translate::validate`]) done once, when the
//! object is decoded, rather than on every translation.
//!
//! Sharing is what keeps the copies others hold cheap: the NACK quarantine
//! keeps the content of every route ([`crate::quarantine`]), and its view of
//! the inputs is a clone of them; both now hold a pointer per route, not a
//! second copy of it. Equality first compares the pointers, so comparing an
//! unchanged route with itself costs nothing.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::Serialize;

use crate::inputs::Kind;
use crate::translate::validate::{self, Violation};

struct Inner<T> {
    obj: T,
    /// What the API server would have refused in the object's `spec`.
    violations: Vec<Violation>,
}

/// A decoded object and its validation (see the module doc). Cloning
/// clones a pointer.
pub struct Stored<T>(Arc<Inner<T>>);

impl<T: Serialize> Stored<T> {
    /// `obj`, validated now as an object of `kind`.
    pub fn new(kind: Kind, obj: T) -> Self {
        let violations = validate::object(kind, &obj);
        Stored(Arc::new(Inner { obj, violations }))
    }
}

impl<T> Stored<T> {
    /// `obj` with the violations of its serialized `spec`, already checked
    /// (see [`crate::inputs::decode_validated`]).
    pub(crate) fn validated(obj: T, violations: Vec<Violation>) -> Self {
        Stored(Arc::new(Inner { obj, violations }))
    }

    /// What the API server would have refused in the object's `spec`.
    pub fn violations(&self) -> &[Violation] {
        &self.0.violations
    }
}

impl<T> Clone for Stored<T> {
    fn clone(&self) -> Self {
        Stored(Arc::clone(&self.0))
    }
}

impl<T> Deref for Stored<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.obj
    }
}

impl<T: PartialEq> PartialEq for Stored<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.obj == other.0.obj
    }
}

impl<T: fmt::Debug> fmt::Debug for Stored<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.obj.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> gateway_api::experimental::httproutes::HttpRoute {
        serde_yaml::from_str(yaml).expect("valid HTTPRoute")
    }

    #[test]
    fn validation_at_decode_equals_validation_of_the_typed_object() {
        // One valid route, one the CRD schema refuses (a hostname with
        // an upper-case letter and a port above 65535).
        for yaml in [
            "{metadata: {name: a, namespace: n}, spec: {hostnames: [a.example.com], rules: [{backendRefs: [{name: s, port: 80}]}]}}",
            "{metadata: {name: a, namespace: n}, spec: {hostnames: [A.example.com], rules: [{backendRefs: [{name: s, port: 70000}]}]}}",
        ] {
            let obj = route(yaml);
            let value = serde_json::to_value(&obj).expect("serializes");
            let (decoded, unknown, violations) = crate::inputs::decode_validated::<
                gateway_api::experimental::httproutes::HttpRoute,
            >(
                Kind::HTTPRoute,
                &crate::inputs::ObjKey::new("n", "a"),
                value,
            )
            .expect("decodes");
            assert!(unknown.is_empty());
            let at_decode = Stored::validated(decoded, violations);
            let now = Stored::new(Kind::HTTPRoute, obj);
            assert_eq!(at_decode.violations(), now.violations());
            assert_eq!(
                now.violations(),
                validate::typed_spec(Kind::HTTPRoute, &now.spec).as_slice()
            );
            assert_eq!(at_decode, now);
        }
        let bad = Stored::new(
            Kind::HTTPRoute,
            route("{metadata: {name: a, namespace: n}, spec: {hostnames: [A.example.com], rules: [{backendRefs: [{name: s, port: 70000}]}]}}"),
        );
        let paths: Vec<&str> = bad.violations().iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&"spec.hostnames[0]"), "{paths:?}");
        assert!(
            paths.contains(&"spec.rules[0].backendRefs[0].port"),
            "{paths:?}"
        );
    }
}
