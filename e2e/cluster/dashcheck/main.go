// dashcheck decodes Grafana dashboard JSON files strictly with the Grafana
// Foundation SDK's generated dashboard types (unknown fields, wrong types and
// unknown panel kinds are errors) and runs the SDK's validation. Used by
// e2e/tests/test_monitoring.py on deploy/monitoring/grafana-dashboard.json.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dashcheck DASHBOARD.json...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		var d dashboard.Dashboard
		if err := noErrors(d.UnmarshalJSONStrict(raw)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: not a valid dashboard: %v\n", path, err)
			failed = true
			continue
		}
		if err := noErrors(d.Validate()); err != nil {
			fmt.Fprintf(os.Stderr, "%s: invalid dashboard: %v\n", path, err)
			failed = true
			continue
		}
		title := ""
		if d.Title != nil {
			title = *d.Title
		}
		fmt.Printf("%s: ok (%q, %d panels)\n", path, title, len(d.Panels))
	}
	if failed {
		os.Exit(1)
	}
}

// noErrors turns an empty cog.BuildErrors (the SDK returns one, typed but
// empty, when decoding succeeds) into nil.
func noErrors(err error) error {
	var errs cog.BuildErrors
	if errors.As(err, &errs) && len(errs) == 0 {
		return nil
	}
	return err
}
