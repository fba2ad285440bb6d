package natsauth_test

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// The attack: 200,000 made-up vehicle ids, one message each, grew the platform to
// gigabytes and raised an offline alert per id. Now an id must be a registered device to
// connect at all: every attempt is refused at login, and nothing is stored or registered.
// 2,000 attempts by default; 100,000 with FLEETWIRE_SECURITY_FULL=1 (make security-full:
// about ten minutes on a busy 2-core machine, a few on a quiet one).
func TestUnknownDeviceStorm(t *testing.T) {
	n := 2_000
	if os.Getenv("FLEETWIRE_SECURITY_FULL") == "1" && !raceEnabled {
		n = 100_000
	}
	s := startSecure(t)
	var (
		next, wrong atomic.Int64
		firstErr    atomic.Value
		wg          sync.WaitGroup
	)
	start := time.Now()
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				id := fmt.Sprintf("ghost-%06d", i)
				nc, err := nats.Connect(s.url, nats.UserInfo(id, "guess"), nats.NoReconnect(), nats.Timeout(30*time.Second))
				if err == nil {
					_ = nc.Publish(bus.UpSubject(id, bus.KindTelemetry), []byte("x"))
					nc.Close()
					wrong.Add(1)
					continue
				}
				if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
					wrong.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d refused logins in %v", n, time.Since(start).Round(time.Millisecond))
	if w := wrong.Load(); w > 0 {
		t.Fatalf("%d of %d made-up ids were not refused with an authorization violation (first: %v)", w, n, firstErr.Load())
	}
	if got := s.responder.Stats(); got.Refused < uint64(n) || got.Accepted != 0 {
		t.Fatalf("responder %+v; want %d refused, none accepted", got, n)
	}
	if got := s.stored(t, bus.TelemetryStream, ">"); got != 0 {
		t.Fatalf("%d records stored, want none", got)
	}
	if l := s.devices.Len(); l != 0 {
		t.Fatalf("registry has %d devices, want none", l)
	}
}
