package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	"github.com/fleetwire/fleetwire/tests/internal/faulttest"
)

// TestClusterThroughput measures (never asserts) how fast 1 and 2 tracking instances
// (--partitions auto) work off the same backlog on a 3-node cluster with R3 streams and
// Redis: the simulator fills the telemetry stream first, then the instances start and
// the clock runs until their consumers have nothing pending. Start-up and the lease
// spread are inside the time. CLUSTER_BENCH=1; figures in docs/benchmarks.md.
func TestClusterThroughput(t *testing.T) {
	if os.Getenv("CLUSTER_BENCH") == "" {
		t.Skip("throughput measurement: CLUSTER_BENCH=1")
	}
	bin := t.TempDir()
	faulttest.BuildBinaries(t, bin)
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d instances", k), func(t *testing.T) {
			red := faulttest.StartRedis(t)
			nc := natstest.NewCluster(t, 3)
			admin := nc.Bus(t, "admin", nil)
			nc.EnsureStreams(t, admin, bus.StreamConfig{Replicas: 3})
			sim := &faulttest.Proc{T: t, Name: "fleetsim", Bin: filepath.Join(bin, "fleetsim"),
				Args: []string{"run", "--nats-url", nc.URL(), "--vehicles", "2000", "--seed", "5",
					"--interval", "200ms", "--prefix", "tp", "--stats", "0"}}
			sim.Start()
			time.Sleep(20 * time.Second)
			sim.Stop(10 * time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			s, err := admin.Stream(ctx, bus.TelemetryStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			msgs := info.State.Msgs
			start := time.Now()
			for i := range k {
				p := &faulttest.Proc{T: t, Name: fmt.Sprintf("tracking-%d", i), Bin: filepath.Join(bin, "tracking"),
					Env: []string{"FLEETWIRE_DATA_DIR=" + t.TempDir()}, Supervise: true,
					Args: []string{"--nats-url", nc.URL(), "--redis-url", red.URL(), "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "",
						"--insecure", "--partitions", "auto", "--lease-ttl", "2s", "--stream-replicas", "3"}}
				p.Start()
				t.Cleanup(p.Kill)
			}
			// Wait until some consumer exists, then until none has anything pending.
			for {
				pending, consumers := uint64(0), 0
				for ci := range s.ListConsumers(ctx).Info() {
					if strings.HasPrefix(ci.Name, "tracking-") {
						consumers++
						pending += ci.NumPending + uint64(ci.NumAckPending)
					}
				}
				if consumers >= bus.DefaultPartitions && pending == 0 {
					break
				}
				if ctx.Err() != nil {
					t.Fatal("tracking did not catch up")
				}
				time.Sleep(200 * time.Millisecond)
			}
			el := time.Since(start)
			t.Logf("FIGURES: %d tracking instance(s): %d messages in %s = %s messages/s (start-up and lease spread included)",
				k, msgs, el.Round(time.Millisecond), strconv.FormatFloat(float64(msgs)/el.Seconds(), 'f', 0, 64))
		})
	}
}
