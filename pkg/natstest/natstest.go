// Package natstest starts the real NATS server that tests run against: nats-server
// embedded in the test process, JetStream on, on a random loopback port, its store in a
// temporary directory, all removed when the test ends. It is the one set-up every test
// package uses, beside pkg/redistest for Redis.
//
//	b := natstest.Bus(t)            // a bus with Fleetwire's streams (in memory)
//	c := natstest.Client(t, b)      // a second connection, as another process has
package natstest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/eventpub"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Options adjust the server a test gets. The zero value is what most tests want.
type Options struct {
	// Log receives the bus's and the server's log lines; nil discards them.
	Log *slog.Logger
	// NoStreams leaves Fleetwire's streams unprovisioned, for tests of what happens
	// before they exist.
	NoStreams bool
	// Streams configures the provisioned streams; MemoryStorage is always on, so tests
	// never wait for a disk.
	Streams bus.StreamConfig
}

// Bus starts an embedded server with Fleetwire's streams and returns a bus connected to
// it. Both are closed when the test ends.
func Bus(t testing.TB) *bus.Bus {
	t.Helper()
	return Open(t, Options{})
}

// Open is Bus with options.
func Open(t testing.TB, o Options) *bus.Bus {
	t.Helper()
	log := o.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{URL: bus.Embedded, ListenPort: -1, MaxPayload: wire.MaxMessageBytes}, log)
	if err != nil {
		t.Fatalf("natstest: embedded nats: %v", err)
	}
	t.Cleanup(b.Close)
	eventpub.RaiseDeadLetters(b)
	if !o.NoStreams {
		EnsureStreams(t, b, o.Streams)
	}
	return b
}

// EnsureStreams provisions Fleetwire's streams on b's server, in memory.
func EnsureStreams(t testing.TB, b *bus.Bus, cfg bus.StreamConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.MemoryStorage = true
	if cfg.MaxMsgSize == 0 {
		cfg.MaxMsgSize = wire.MaxMessageBytes
	}
	if err := b.EnsureStreams(ctx, cfg); err != nil {
		t.Fatalf("natstest: streams: %v", err)
	}
}

// Client opens a separate connection to b's server, as another process would have,
// closed when the test ends (or earlier by the test).
func Client(t testing.TB, b *bus.Bus) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := bus.Open(ctx, bus.Config{URL: b.ClientURL()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("natstest: client connection: %v", err)
	}
	t.Cleanup(c.Close)
	eventpub.RaiseDeadLetters(c)
	return c
}

// JetStream is a JetStream context on b's connection, for a test that drives JetStream as
// a client would (asynchronous publishes, consumers of its own); the code under test goes
// through the Bus's methods.
func JetStream(t testing.TB, b *bus.Bus) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(b.Conn())
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}
