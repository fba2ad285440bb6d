package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/natstest"
)

func TestBusHasStreamsAndAcceptsClients(t *testing.T) {
	b := natstest.Bus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := b.Partitions(ctx)
	if err != nil || n <= 0 {
		t.Fatalf("Partitions() = %d, %v; want the provisioned telemetry stream's count", n, err)
	}
	c := natstest.Client(t, b)
	if got, want := c.ClientURL(), b.ClientURL(); got == "" || want == "" {
		t.Fatalf("client URL %q, server URL %q; want both set", got, want)
	}
	if _, err := c.Partitions(ctx); err != nil {
		t.Fatalf("second connection: Partitions: %v", err)
	}
}

func TestTwoServersAreIndependent(t *testing.T) {
	a, b := natstest.Bus(t), natstest.Bus(t)
	if a.ClientURL() == b.ClientURL() {
		t.Fatalf("both servers at %s; want a random port each", a.ClientURL())
	}
}
