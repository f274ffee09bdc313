//go:build tools

// Pins the peer that `make bench-compare` builds from the Go module proxy
// (Envoy Gateway, for the side-by-side benchmark; nothing of it is vendored).
package tools

import _ "github.com/envoyproxy/gateway/cmd/envoy-gateway"
