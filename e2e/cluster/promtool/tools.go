//go:build tools

// Keeps promtool's command package in this module's dependency graph.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
