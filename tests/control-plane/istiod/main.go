// istiod (pilot-discovery) for the cluster tests, built from the istio.io/istio module.
package main

import (
	"os"

	"istio.io/istio/pilot/cmd/pilot-discovery/app"
)

func main() {
	if err := app.NewRootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}
