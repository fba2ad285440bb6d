package natstest_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
)

// groundTruth records what a partition consumer applied: per vehicle, the counters in the
// order they were handed over, and how often each was applied.
type groundTruth struct {
	mu      sync.Mutex
	order   map[string][]int
	applied map[string]int
}

func newGroundTruth() *groundTruth {
	return &groundTruth{order: map[string][]int{}, applied: map[string]int{}}
}

func (g *groundTruth) handle(_ context.Context, batch []bus.Msg) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range batch {
		v, n, ok := strings.Cut(string(m.Data), ":")
		if !ok {
			continue
		}
		i, _ := strconv.Atoi(n)
		g.order[v] = append(g.order[v], i)
		g.applied[string(m.Data)]++
	}
	return nil
}

func (g *groundTruth) total() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.applied)
}

// check compares with what was published: every record applied exactly once, each
// vehicle's in publishing order.
func (g *groundTruth) check(t *testing.T, vehicles []string, perVehicle int) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	lost, dup := 0, 0
	for _, v := range vehicles {
		for i := 0; i < perVehicle; i++ {
			switch n := g.applied[fmt.Sprintf("%s:%d", v, i)]; {
			case n == 0:
				lost++
			case n > 1:
				dup++
			}
		}
		seq := g.order[v]
		for i := 1; i < len(seq); i++ {
			if seq[i] <= seq[i-1] {
				t.Errorf("vehicle %s: record %d applied after %d", v, seq[i], seq[i-1])
				break
			}
		}
	}
	if lost != 0 || dup != 0 {
		t.Errorf("lost %d, duplicated %d of %d records", lost, dup, len(vehicles)*perVehicle)
	}
}

// publish sends records i in [from, to) of every vehicle, each with a Nats-Msg-Id, retrying
// until JetStream acknowledges it, as a tracker keeps a record until acknowledged.
func publish(t *testing.T, b *bus.Bus, vehicles []string, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		for _, v := range vehicles {
			msg := &nats.Msg{Subject: bus.UpSubject(v, bus.KindTelemetry), Data: []byte(fmt.Sprintf("%s:%d", v, i)), Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, string(msg.Data))
			deadline := time.Now().Add(60 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := b.PublishMsg(ctx, msg)
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("publish %s: %v", msg.Data, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The services' streams and buckets replicated on three servers: with one server down the
// pipeline keeps taking and delivering records, and the server rejoins when it is back.
func TestClusterPipelineSurvivesANodeRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-server cluster")
	}
	c := natstest.NewCluster(t, 3)
	admin := c.Bus(t, "admin", nil)
	c.EnsureStreams(t, admin, bus.StreamConfig{Replicas: 3, Partitions: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, name := range []string{bus.TelemetryStream, bus.EventStream, bus.DeadLetterStream} {
		s, err := admin.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Replicas; got != 3 {
			t.Fatalf("%s: %d replicas, want 3", name, got)
		}
	}

	producer := c.Bus(t, "producer", nil)
	worker := c.Bus(t, "worker", nil)
	truth := newGroundTruth()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- worker.ConsumePartitions(runCtx, "cluster", []int{0, 1, 2, 3}, []string{"*"}, bus.ConsumerConfig{AckWait: 5 * time.Second}, truth.handle)
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()

	vehicles := make([]string, 20)
	for i := range vehicles {
		vehicles[i] = fmt.Sprintf("veh-%03d", i)
	}
	const per = 30
	publish(t, producer, vehicles, 0, 10)
	waitFor(t, "the first records", func() bool { return truth.total() == len(vehicles)*10 })

	c.Stop(0)
	publish(t, producer, vehicles, 10, 20)
	waitFor(t, "records with one server down", func() bool { return truth.total() == len(vehicles)*20 })

	c.Start(0)
	c.WaitReady(60 * time.Second)
	publish(t, producer, vehicles, 20, per)
	waitFor(t, "records after the server came back", func() bool { return truth.total() == len(vehicles)*per })
	truth.check(t, vehicles, per)
}
