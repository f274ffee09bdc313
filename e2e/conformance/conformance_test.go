// Runs the official Gateway API conformance suite (v1.6.1) against the
// cluster in $KUBECONFIG with Switchyard's GatewayClass. Flags are the
// suite's own (see `make conformance`): -gateway-class, -conformance-profiles,
// -supported-features, -report-output, -organization, -project, -url,
// -version, -contact, -mode.
package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestGatewayAPIConformance(t *testing.T) {
	conformance.RunConformance(t)
}
