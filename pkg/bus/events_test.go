package bus

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEventIdentityOutlivesTheDuplicateWindow: an event republished after JetStream's
// duplicate window has passed (a rebuild, a merged alert published again) is not stored
// a second time; a different event on the same vehicle and kind is.
func TestEventIdentityOutlivesTheDuplicateWindow(t *testing.T) {
	ctx := context.Background()
	b, err := Open(ctx, Config{URL: Embedded, ListenPort: -1}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	const window = 200 * time.Millisecond
	if err := b.EnsureStreams(ctx, StreamConfig{MemoryStorage: true, DedupWindow: window}); err != nil {
		t.Fatal(err)
	}
	if err := b.RegisterMetrics(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	ev := func(id string) Once {
		return Once{Subject: EventSubject("tracking", "status_changed", "v1", id), ID: id, Data: []byte(id), Source: "tracking", Kind: "status_changed"}
	}
	steps := []struct {
		name  string
		id    string
		after time.Duration
	}{
		{"first", "a", 0},
		{"repeat inside the window", "a", 0},
		{"repeat after the window", "a", 3 * window},
		{"another event", "b", 0},
		{"another repeat after the window", "b", 3 * window},
	}
	for _, st := range steps {
		time.Sleep(st.after) // moves past the window; nothing is asserted about time
		if err := b.PublishOnce(ctx, []Once{ev(st.id)}, 0); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	s, err := b.js.Stream(ctx, EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("event stream holds %d events, want 2", info.State.Msgs)
	}
	if got := testutil.ToFloat64(b.events.Duplicates.WithLabelValues("tracking", "status_changed")); got != 3 {
		t.Errorf("duplicates counted %v, want 3", got)
	}
	if got := testutil.ToFloat64(b.events.Published.WithLabelValues("tracking", "status_changed")); got != 2 {
		t.Errorf("published counted %v, want 2", got)
	}
}
