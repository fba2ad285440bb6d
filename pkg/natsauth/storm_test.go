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
		next, accepted, other atomic.Int64
		firstErr              atomic.Value
		wg                    sync.WaitGroup
	)
	start := time.Now()
	for range 8 {
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
					accepted.Add(1)
					continue
				}
				if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
					// Not a login either (a connect timeout on an overloaded machine).
					other.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d login attempts in %v; %d failed otherwise than refused (first: %v)", n, time.Since(start).Round(time.Millisecond), other.Load(), firstErr.Load())
	if a := accepted.Load(); a > 0 {
		t.Fatalf("%d of %d made-up ids logged in", a, n)
	}
	if o := other.Load(); o > int64(n/10) {
		t.Fatalf("%d of %d attempts failed otherwise than with an authorization violation (first: %v)", o, n, firstErr.Load())
	}
	if got := s.responder.Stats(); got.Accepted != 0 || got.Refused < uint64(n)-uint64(other.Load()) {
		t.Fatalf("responder %+v; want every made-up id refused, none accepted", got)
	}
	if got := s.stored(t, bus.TelemetryStream, ">"); got != 0 {
		t.Fatalf("%d records stored, want none", got)
	}
	if l := s.devices.Len(); l != 0 {
		t.Fatalf("registry has %d devices, want none", l)
	}
}
