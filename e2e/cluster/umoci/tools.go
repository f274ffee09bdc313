//go:build tools

// Keeps umoci's command package in this module's dependency graph.
package tools

import _ "github.com/opencontainers/umoci/cmd/umoci"
