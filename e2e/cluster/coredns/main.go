// Command coredns is CoreDNS built with only the plugins the Gateway API
// conformance UDP backend's Corefile uses (errors, log, forward, whoami), for
// the process kubelet's image map (registry.k8s.io/coredns/coredns).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/whoami"
)

func init() {
	// Same relative order as CoreDNS's plugin.cfg.
	dnsserver.Directives = []string{"errors", "log", "forward", "whoami"}
}

func main() {
	coremain.Run()
}
