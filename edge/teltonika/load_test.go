package teltonika

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/bus"
)

// TestLoad measures the gateway: FLEETWIRE_TELTONIKA_LOAD=1 opens DEVICES concurrent TCP
// sessions (default 10 000) to a gateway on an embedded NATS server with the platform's
// streams on disk, and has each send frames of RECORDS records (default 10) back to back
// for SECONDS (default 20), waiting for each acknowledgement as a device does. It reports
// acknowledged (so stored) records per second. A measurement, not a verdict: it only fails
// when the gateway breaks. docs/benchmarks.md has the command and the figures.
func TestLoad(t *testing.T) {
	if os.Getenv("FLEETWIRE_TELTONIKA_LOAD") == "" {
		t.Skip("set FLEETWIRE_TELTONIKA_LOAD=1 to measure (raise ulimit -n above twice DEVICES)")
	}
	devices := envInt("DEVICES", 10_000)
	perFrame := envInt("RECORDS", 10)
	seconds := envInt("SECONDS", 20)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	imeis := make([]string, devices)
	lines := make([]byte, 0, devices*32)
	for i := range devices {
		imeis[i] = fmt.Sprintf("35%013d", i+1)
		lines = fmt.Appendf(lines, "%s load-%05d\n", imeis[i], i)
	}
	// TELTONIKA_ADDR measures a running gateway (the all-in-one, whose services then
	// consume the records too) instead of one started here; DEVICES_FILE is its
	// --teltonika-devices file, written here. Two processes also split the file
	// descriptors: 10 000 sessions need 20 000.
	addr := os.Getenv("TELTONIKA_ADDR")
	var g *Gateway
	gdone := make(chan error, 1)
	if addr == "" {
		b, err := bus.Open(ctx, bus.Config{URL: bus.Embedded, ListenPort: -1, StoreDir: t.TempDir()}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.EnsureStreams(ctx, bus.StreamConfig{}); err != nil {
			t.Fatal(err)
		}
		devs, err := ParseDevices(lines)
		if err != nil {
			t.Fatal(err)
		}
		reg := NewMemoryRegistry()
		for imei, v := range devs {
			_ = reg.Add(imei, v)
		}
		g, err = New(Config{TCPAddr: "127.0.0.1:0", MaxConns: devices + 10}, b.Conn(), reg, quiet(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Listen(false); err != nil {
			t.Fatal(err)
		}
		addr = g.TCPAddr()
		go func() { gdone <- g.Run(ctx) }()
	} else {
		close(gdone)
		if path := os.Getenv("DEVICES_FILE"); path != "" {
			if err := os.WriteFile(path, lines, 0o600); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second) // the gateway re-reads the file at most once a second
		}
	}

	// Connect every device first, so the figure is for 10 000 sessions open at once.
	conns := make([]net.Conn, devices)
	var dialWG sync.WaitGroup
	sem := make(chan struct{}, 200)
	var dialErr atomic.Value
	for i := range devices {
		dialWG.Add(1)
		sem <- struct{}{}
		go func() {
			defer dialWG.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err != nil {
				dialErr.Store(err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			var ans [1]byte
			if _, err := c.Write(codec.AppendIMEI(nil, imeis[i])); err != nil {
				dialErr.Store(err)
				return
			}
			if _, err := io.ReadFull(c, ans[:]); err != nil || ans[0] != codec.HandshakeAccept {
				dialErr.Store(fmt.Errorf("handshake %d: %v %x", i, err, ans))
				return
			}
			conns[i] = c
		}()
	}
	dialWG.Wait()
	if err := dialErr.Load(); err != nil {
		t.Fatalf("connecting %d devices: %v", devices, err)
	}
	t.Logf("%d sessions open", devices)

	var records, frames atomic.Int64
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			base := time.Now().Add(-time.Hour).UnixMilli()
			recs := make([]codec.Record, perFrame)
			var ack [4]byte
			for n := 0; time.Now().Before(stop); n++ {
				for k := range recs {
					recs[k] = codec.Record{TimestampMs: base + int64(n*perFrame+k)*1000, Lat: 525200000 + int32(i), Lon: 134050000 + int32(n),
						Satellites: 9, Speed: 40, Angle: 90,
						IO: []codec.IO{{ID: 239, Size: 1, Value: 1}, {ID: 240, Size: 1, Value: 1}, {ID: 21, Size: 1, Value: 4},
							{ID: 66, Size: 2, Value: 12600}, {ID: 16, Size: 4, Value: uint64(n)}}}
				}
				body, _ := codec.AppendBody(nil, codec.Codec8, recs)
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				if _, err := c.Write(codec.AppendFrame(nil, body)); err != nil {
					t.Errorf("device %d write: %v", i, err)
					return
				}
				if _, err := io.ReadFull(c, ack[:]); err != nil || int(binary.BigEndian.Uint32(ack[:])) != perFrame {
					t.Errorf("device %d ack: %v %x", i, err, ack)
					return
				}
				records.Add(int64(perFrame))
				frames.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("%d devices, %d records per frame, %s: %d records in %d frames acknowledged = %.0f records/s (%.0f frames/s)",
		devices, perFrame, elapsed.Round(time.Millisecond), records.Load(), frames.Load(),
		float64(records.Load())/elapsed.Seconds(), float64(frames.Load())/elapsed.Seconds())
	cancel()
	<-gdone
}

func envInt(key string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(key)); err == nil && n > 0 {
		return n
	}
	return def
}
