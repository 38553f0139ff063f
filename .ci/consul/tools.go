//go:build tools

// Package consul pins the Consul agent the discovery tests run
// (consul agent -dev). v1.14.11 is the newest MPL-licensed release that
// builds from the module proxy.
package consul

import _ "github.com/hashicorp/consul"
