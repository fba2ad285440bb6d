package bus

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Provisioning again with the same configuration sends the server no update (every
// process provisions at start, and concurrent updates of one stream race inside
// nats-server); a changed setting is still applied.
func TestEnsureStreamsSkipsUnchangedStreams(t *testing.T) {
	b := testBus(t) // streams provisioned once
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{TelemetryStream, EventStream, DeadLetterStream, MQTTStream} {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		have := s.CachedInfo().Config
		want := have
		tests := []struct {
			name   string
			change func(*jetstream.StreamConfig)
			same   bool
		}{
			{"as stored", func(*jetstream.StreamConfig) {}, true},
			{"unset limits as the server reports them", func(c *jetstream.StreamConfig) {
				if c.MaxMsgSize == -1 {
					c.MaxMsgSize = 0
				}
			}, true},
			{"another byte cap", func(c *jetstream.StreamConfig) { c.MaxBytes = have.MaxBytes/2 + 1 }, false},
			{"another age", func(c *jetstream.StreamConfig) { c.MaxAge = have.MaxAge + time.Hour }, false},
			{"another replica count", func(c *jetstream.StreamConfig) { c.Replicas = 3 }, false},
			{"another subject", func(c *jetstream.StreamConfig) { c.Subjects = append([]string{"x.y"}, c.Subjects...) }, false},
		}
		for _, tt := range tests {
			w := want
			w.Subjects = append([]string(nil), want.Subjects...)
			tt.change(&w)
			if got := sameStreamConfig(have, w); got != tt.same {
				t.Errorf("%s, %s: same = %v, want %v", name, tt.name, got, tt.same)
			}
		}
	}

	// Against the server: provisioning again unchanged sends no update, and a changed
	// event cap updates exactly the streams it sizes. The server announces every update
	// on an advisory subject, in order, so the unchanged pass's updates (if any) would
	// arrive before the changed pass's.
	updates := make(chan string, 64)
	sub, err := b.nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED.>", func(m *nats.Msg) {
		updates <- strings.TrimPrefix(m.Subject, "$JS.EVENT.ADVISORY.STREAM.UPDATED.")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStreams(ctx, StreamConfig{MemoryStorage: true}); err != nil {
		t.Fatalf("provisioning again: %v", err)
	}
	if err := b.EnsureStreams(ctx, StreamConfig{MemoryStorage: true, EventBytes: 1 << 20}); err != nil {
		t.Fatalf("provisioning a smaller event cap: %v", err)
	}
	want := map[string]bool{EventStream: true, DeadLetterStream: true}
	var got []string
	for len(want) > 0 {
		select {
		case name := <-updates:
			got = append(got, name)
			if !want[name] {
				t.Fatalf("stream updates %v: %s was updated, but only %s and %s changed", got, name, EventStream, DeadLetterStream)
			}
			delete(want, name)
		case <-ctx.Done():
			t.Fatalf("stream updates %v: the changed cap was not applied to %v", got, want)
		}
	}
}
