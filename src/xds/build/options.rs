//! Operator choices about the generated configuration, and stat names.

/// What the operator chose about the generated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A JSON access log on Envoy's stdout for every HTTP connection
    /// manager and TCP proxy (`--envoy-access-log`).
    pub access_log: bool,
    /// A port's route table with more virtual hosts than this is served
    /// in shards through scoped routes (`shard`); 0 never shards
    /// (`--route-shards-above`).
    pub route_shards_above: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            access_log: true,
            route_shards_above: super::shard::DEFAULT_THRESHOLD,
        }
    }
}

/// An Envoy stat name (stat_prefix, alt_stat_name) from one of our resource
/// names: everything but ASCII letters, digits, `-` and `_` becomes `_`.
/// Envoy's tag extraction splits stat names at dots, so a dot in a prefix
/// (a hostname, a dotted route name) would spill into the metric name.
pub fn stat_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_names_keep_no_dot_or_slash() {
        assert_eq!(
            stat_name("infra/gw/8443/web.example.com"),
            "infra_gw_8443_web_example_com"
        );
        assert_eq!(stat_name("apps/web-v2/80"), "apps_web-v2_80");
        assert_eq!(stat_name("*.example.com:443"), "__example_com_443");
    }

    #[test]
    fn access_log_is_on_by_default() {
        assert!(Options::default().access_log);
    }
}
