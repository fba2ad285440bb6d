package launch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/simulators/fleetsim"
	"github.com/fleetwire/fleetwire/simulators/loadtest"
)

// fleetsim load --protocol teltonika|mqtt|coap: the load tester's vehicles register as
// devices, report through each gateway with their own credentials, and every record they
// sent reaches the dispatcher (WatchVehicles), scored against the same ledger as on NATS.
func TestLoadTestThroughEveryGateway(t *testing.T) {
	dir := t.TempDir()
	p := startPlatform(t, Options{RedisURL: "memory", DataDir: dir,
		NATS:      bus.Config{URL: bus.Embedded, ListenPort: -1, MQTT: bus.MQTTConfig{Port: -1}},
		Services:  append(append([]string(nil), AllServices...), Teltonika, CoAP),
		Teltonika: TeltonikaOptions{TCPAddr: "127.0.0.1:0"},
		CoAP:      CoAPOptions{Addr: "127.0.0.1:0"},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	devices, err := natsauth.OpenDevices(ctx, p.Bus, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, p)
	// The load tester logs in as the load generator, as fleetsim load does.
	pw, err := os.ReadFile(filepath.Join(dir, "credentials", "nats", natsauth.UserLoadgen+".password"))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := bus.Open(ctx, bus.Config{URL: p.Bus.ClientURL(), User: natsauth.UserLoadgen, Password: strings.TrimSpace(string(pw)),
		InboxPrefix: natsauth.InboxPrefix(natsauth.UserLoadgen)}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	tests := []struct {
		protocol, teltonika, device string
	}{
		{protocol: fleetsim.ProtocolTeltonika, teltonika: p.TeltonikaTCP},
		{protocol: fleetsim.ProtocolMQTT, device: p.MQTTAddr},
		{protocol: fleetsim.ProtocolCoAP, device: p.CoAPAddr},
	}
	for _, tc := range tests {
		t.Run(tc.protocol, func(t *testing.T) {
			cfg := loadtest.DefaultConfig()
			cfg.Vehicles, cfg.Rate, cfg.Duration, cfg.Drain = 6, 6, 5*time.Second, 2*time.Minute
			cfg.Prefix = tc.protocol + "-"
			cfg.Protocol, cfg.TeltonikaAddr, cfg.DeviceAddr = tc.protocol, tc.teltonika, tc.device
			registered := 0
			cfg.Register = func(ctx context.Context, vehicle, imei string) (string, error) {
				_, secret, err := devices.Add(ctx, natsauth.Device{ID: vehicle, Model: "fleetsim", Protocol: tc.protocol}, "test")
				if err != nil {
					return "", err
				}
				if tc.protocol == fleetsim.ProtocolTeltonika {
					if err := p.TeltonikaDevices.Add(imei, vehicle); err != nil {
						return "", err
					}
				}
				registered++
				return secret, nil
			}
			lt, err := loadtest.NewWithConn(cfg, lg.Conn(), conn, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer lt.Close()
			res, err := lt.Run(ctx)
			if err != nil {
				t.Fatalf("load test: %v", err)
			}
			if registered != cfg.Vehicles {
				t.Errorf("%d devices registered, want %d", registered, cfg.Vehicles)
			}
			if len(res.Steps) != 1 {
				t.Fatalf("%d steps, want 1", len(res.Steps))
			}
			st := res.Steps[0]
			summary := fmt.Sprintf("published %d, delivered %d, missing %d on %d vehicles, acked packets %d, errors %d, latency samples %d, verdict %q",
				st.Published, st.Delivered, st.Missing, st.MissingVeh, st.Acked, st.PublishErrors, st.Latency.Samples, st.Verdict)
			t.Log(summary)
			if st.Published == 0 || st.Missing != 0 || st.Delivered != st.Published {
				t.Errorf("%s", summary)
			}
			if st.Latency.Samples == 0 {
				t.Errorf("no latency samples: the dispatcher's updates were not matched to what the devices sent")
			}
			if res.Protocol != tc.protocol || res.Gateway == "" {
				t.Errorf("result names protocol %q through %q, want %s through its gateway", res.Protocol, res.Gateway, tc.protocol)
			}
		})
	}
}
