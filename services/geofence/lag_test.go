package geofence

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Sixteen watchers that never read, while 20 MB of events go by: the server keeps a
// bounded buffer for each (not the 20 MB each), and each watcher, once it reads, learns it
// lagged and where to resume.
func TestNonReadingWatchersLagWithBoundedMemory(t *testing.T) {
	const watchers, events = 16, 20_000
	b := openBus(t)
	in := startInstance(t, b, NewMemoryStore(), DefaultConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// The watchers' client accepts no more than gRPC's basic 64 KiB window per stream, as a
	// client on another machine would hold its own buffers: what is measured is the server.
	conn, err := grpc.NewClient(in.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := fleetv1.NewGeofenceServiceClient(conn)
	var streams []grpc.ServerStreamingClient[fleetv1.WatchZoneEventsResponse]
	for range watchers {
		s, err := client.WatchZoneEvents(ctx, &fleetv1.WatchZoneEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Header(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()

	// A probe sees the events at about the time the watchers' subscriptions do; the heap is
	// then sampled a few times while the server's goroutines settle.
	seen := make(chan struct{})
	var n atomic.Int64
	probeBus := clientBus(t, b)
	probe, err := probeBus.Conn().Subscribe(bus.EventSourceFilter(Source), func(*nats.Msg) {
		if n.Add(1) == events {
			close(seen)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Unsubscribe()
	// The subscription is in place at the server before the publisher (another
	// connection) starts: otherwise the first events can go out before it exists.
	if err := probeBus.Conn().FlushTimeout(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	ev := &fleetv1.Event{EventId: "e", Source: Source, Kind: "enter", VehicleId: "v1", Attributes: map[string]string{"pad": strings.Repeat("x", 1000)}}
	data, _ := proto.Marshal(ev)
	subject := bus.EventSubject(Source, "enter", "v1", "e")
	pub := clientBus(t, b) // a publisher elsewhere, at a pace the server can deliver
	for i := range events {
		if err := pub.Conn().Publish(subject, data); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			if err := pub.Conn().FlushTimeout(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatalf("probe saw %d of %d events", n.Load(), events)
	}
	var peak uint64
	for range 10 { // a few samples while the server's goroutines settle
		peak = max(peak, heap())
	}
	// The watchers' own buffers are 16 × (1 024 events + a gRPC window), about 20 MB; what
	// NATS holds in flight for the in-process server and client varies with scheduling (up
	// to ~100 MB seen on a loaded 2-core machine). Half of the unbounded growth separates a
	// bounded buffer from one that keeps every event, whatever the machine is doing.
	unbounded := int64(watchers * events * len(data))
	limit := unbounded / 2
	if grew := int64(peak) - int64(before); grew > limit {
		t.Errorf("heap grew by %d MB with %d non-reading watchers, want under %d MB (unbounded would be %d MB)",
			grew>>20, watchers, limit>>20, unbounded>>20)
	}

	for i, s := range streams {
		var err error
		for err == nil {
			_, err = s.Recv()
		}
		if !grpcserver.IsLagged(err) {
			t.Fatalf("watcher %d ended with %v, want lagged", i, err)
		}
		if cur := s.Trailer()[grpcserver.ResumeCursorKey]; len(cur) != 1 {
			t.Errorf("watcher %d: trailer %v, want a resume cursor", i, s.Trailer())
		} else if _, perr := time.Parse(time.RFC3339Nano, cur[0]); perr != nil {
			t.Errorf("watcher %d: cursor %q is not a time: %v", i, cur[0], perr)
		}
	}
}
