package launch

import (
	"bufio"
	"context"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// mosquittoClients finds Debian's mosquitto_pub and mosquitto_sub. Without them the test
// is skipped loudly, unless FLEETWIRE_REQUIRE_MQTT_CLIENTS=1 (set by CI) makes that a
// failure.
func mosquittoClients(t *testing.T) (pub, sub string) {
	t.Helper()
	pub, err1 := exec.LookPath("mosquitto_pub")
	sub, err2 := exec.LookPath("mosquitto_sub")
	if err1 == nil && err2 == nil {
		return pub, sub
	}
	msg := "MOSQUITTO CLIENTS NOT INSTALLED: the mosquitto_pub/mosquitto_sub test is SKIPPED (apt-get install mosquitto-clients); FLEETWIRE_REQUIRE_MQTT_CLIENTS=1 makes this a failure"
	if os.Getenv("FLEETWIRE_REQUIRE_MQTT_CLIENTS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return "", ""
}

// A device driven by the stock Mosquitto command-line clients, the README's commands:
// mosquitto_pub reports and replies at QoS 1 with the device's own secret, a wrong secret
// or an unknown device is refused, and mosquitto_sub receives the IMMOBILIZE.
func TestMQTTWithMosquittoClients(t *testing.T) {
	pubBin, subBin := mosquittoClients(t)
	const vehicle = "veh-mosq-00001"
	p := startPlatform(t, Options{RedisURL: "memory",
		NATS: bus.Config{URL: bus.Embedded, ListenPort: -1, MQTT: bus.MQTTConfig{Port: -1}},
	})
	host, port, err := net.SplitHostPort(p.MQTTAddr)
	if err != nil {
		t.Fatalf("MQTT address %q: %v", p.MQTTAddr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	devices, err := natsauth.OpenDevices(ctx, p.Bus, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := devices.Add(ctx, natsauth.Device{ID: vehicle, Model: "test", Protocol: "mqtt"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	n := 0
	// publish runs mosquitto_pub once; at QoS 1 it exits 0 only after the server's PUBACK.
	publish := func(user, pass, topic string, data []byte) (string, error) {
		n++
		file := filepath.Join(dir, "msg-"+strconv.Itoa(n)+".pb")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(ctx, time.Minute)
		defer pcancel()
		out, err := exec.CommandContext(pctx, pubBin, "-h", host, "-p", port, "-q", "1",
			"-i", user+"-pub", "-u", user, "-P", pass, "-t", topic, "-f", file).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct{ name, user, pass string }{
			{"wrong secret", vehicle, "not-" + secret},
			{"unknown device", "veh-mosq-nobody", secret},
		} {
			out, err := publish(tc.user, tc.pass, "fleet/up/"+tc.user+"/tele", fixBatch(tc.user, 1, time.Now(), 52.5, 13.4, 0))
			if err == nil {
				t.Errorf("%s: mosquitto_pub succeeded: %q", tc.name, out)
			} else if !strings.Contains(out, "not authori") {
				t.Errorf("%s: mosquitto_pub failed, but not as not authorised: %v %q", tc.name, err, out)
			}
		}
	})

	// mosquitto_sub prints each command's payload as one line of hex (-F %x).
	sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-q", "1",
		"-i", vehicle+"-sub", "-u", vehicle, "-P", secret, "-t", "fleet/down/"+vehicle+"/cmd", "-F", "%x")
	stdout, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	sub.Stderr = &stderr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Process.Kill()
		_ = sub.Wait()
		if t.Failed() {
			t.Logf("mosquitto_sub stderr: %s", stderr.String())
		}
	})
	commands := make(chan *fleetv1.DeviceCommand, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 256<<10), 256<<10)
		for sc.Scan() {
			raw, err := hex.DecodeString(strings.TrimSpace(sc.Text()))
			var dc fleetv1.DeviceCommand
			if err == nil && proto.Unmarshal(raw, &dc) == nil {
				commands <- &dc
			}
		}
	}()

	up := func(kind string, data []byte) {
		t.Helper()
		if out, err := publish(vehicle, secret, "fleet/up/"+vehicle+"/"+kind, data); err != nil {
			t.Fatalf("mosquitto_pub %s: %v %q", kind, err, out)
		}
	}
	driveDevice(t, ctx, p, vehicle, protoDevice{
		report: func(seq int, at time.Time, lat, lon, speed float64) {
			up("tele", fixBatch(vehicle, seq, at, lat, lon, speed))
		},
		commands: commands,
		reply:    func(data []byte) { up("reply", data) },
	})
}
