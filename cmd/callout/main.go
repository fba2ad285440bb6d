// Command callout answers device logins for an external nats-server: the auth callout
// responder of deployments/nats/nats-server.conf. It checks each login against the device
// registry (the FLEET_DEVICES bucket) and answers with a user confined to the device's own
// subjects; revoked or rotated devices are disconnected. Run it with -h for its flags;
// every flag has an environment variable. docs/security.md explains the rest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetwire/fleetwire/cmd/internal/launch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := launch.CalloutMain(ctx, os.Args[1:], os.LookupEnv, os.Stderr, nil)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, launch.ErrConfig):
		fmt.Fprintf(os.Stderr, "callout: %v\n", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "callout: %v\n", err)
		os.Exit(1)
	}
}
