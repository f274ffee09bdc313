// Wrapper module: builds dashcheck, a strict decoder of Grafana dashboard JSON
// (github.com/grafana/grafana-foundation-sdk/go, Apache-2.0), from the Go module proxy.
module switchyard.dev/e2e/cluster/dashcheck

go 1.26

require github.com/grafana/grafana-foundation-sdk/go v0.0.22
