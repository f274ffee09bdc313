//! Condition types and reasons, spelled exactly as Gateway API v1.6.1 names them.

pub mod types {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
    pub const PARTIALLY_INVALID: &str = "PartiallyInvalid";
    pub const OVERLAPPING_TLS_CONFIG: &str = "OverlappingTLSConfig";
    /// Gateway: some `spec.tls.frontend` entry is `AllowInsecureFallback`.
    pub const INSECURE_FRONTEND_VALIDATION_MODE: &str = "InsecureFrontendValidationMode";
}

pub mod reasons {
    // Shared
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    // GatewayClass
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const UNSUPPORTED: &str = "Unsupported";
    pub const SUPPORTED_VERSION: &str = "SupportedVersion";
    pub const UNSUPPORTED_VERSION: &str = "UnsupportedVersion";
    // Gateway
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const ADDRESS_NOT_USABLE: &str = "AddressNotUsable";
    pub const CONFIGURATION_CHANGED: &str = "ConfigurationChanged";
    // ListenerSet
    pub const NOT_ALLOWED: &str = "NotAllowed";
    pub const PARENT_NOT_ACCEPTED: &str = "ParentNotAccepted";
    // Listener
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const INVALID_ROUTE_KINDS: &str = "InvalidRouteKinds";
    pub const HOSTNAME_CONFLICT: &str = "HostnameConflict";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const OVERLAPPING_HOSTNAMES: &str = "OverlappingHostnames";
    pub const NO_VALID_CA_CERTIFICATE: &str = "NoValidCACertificate";
    pub const INVALID_CA_CERTIFICATE_REF: &str = "InvalidCACertificateRef";
    pub const INVALID_CA_CERTIFICATE_KIND: &str = "InvalidCACertificateKind";
    // Route
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const INCOMPATIBLE_FILTERS: &str = "IncompatibleFilters";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
}
