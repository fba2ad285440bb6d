package bus_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
)

// mqttChildEnv makes the test binary an embedded server with an MQTT listener on the
// JetStream directory it names (runMQTTChild): the crash test's victim process.
const mqttChildEnv = "FLEETWIRE_TEST_MQTT_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(mqttChildEnv); dir != "" {
		runMQTTChild(dir)
		return
	}
	os.Exit(m.Run())
}

// runMQTTChild starts the embedded server on dir with file storage, provisions the
// streams, prints "ready <nats url> <mqtt addr>" and serves until killed.
func runMQTTChild(dir string) {
	ctx := context.Background()
	b, err := bus.Open(ctx, bus.Config{URL: bus.Embedded, ListenPort: -1, StoreDir: dir,
		MQTT: bus.MQTTConfig{Port: -1}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := b.EnsureStreams(ctx, bus.StreamConfig{Partitions: 2}); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("ready", b.ClientURL(), b.MQTTAddr())
	select {}
}

// startMQTTChild runs the victim on dir and returns its NATS URL and MQTT address.
func startMQTTChild(t *testing.T, dir string) (cmd *exec.Cmd, natsURL, mqttAddr string) {
	t.Helper()
	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mqttChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "ready" {
		t.Fatalf("child server: %q %v", line, err)
	}
	return cmd, f[1], f[2]
}

// A QoS 1 PUBACK vouches for the record: the process is killed (SIGKILL) the moment the
// last PUBACK arrives, and after a restart on the same JetStream directory every
// acknowledged record is in the telemetry stream, as the copy taken from the MQTT store,
// and the consumers' view (direct copies skipped) holds each exactly once.
func TestMQTTPubAckSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a server process")
	}
	const records = 50
	dir := t.TempDir()
	child, _, mqttAddr := startMQTTChild(t, dir)

	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("veh-crash-1").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(time.Minute).SetWriteTimeout(time.Minute))
	if tok := c.Connect(); !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
		t.Fatalf("mqtt connect: %v", tok.Error())
	}
	want := map[string]bool{}
	for i := range records {
		payload := fmt.Sprintf("record-%03d", i)
		tok := c.Publish("fleet/up/veh-crash-1/tele", 1, false, []byte(payload))
		if !tok.WaitTimeout(2*time.Minute) || tok.Error() != nil {
			t.Fatalf("publish %d: no PUBACK: %v", i, tok.Error())
		}
		want[payload] = true
	}
	// Every PUBACK is in: kill at once, no shutdown.
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	c.Disconnect(0)

	_, natsURL, _ := startMQTTChild(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{URL: natsURL}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sourced, consumed := map[string]int{}, map[string]int{}
	for ctx.Err() == nil {
		sourced, consumed = map[string]int{}, map[string]int{}
		cons, err := b.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		info, err := b.Stream(ctx, bus.TelemetryStream)
		if err != nil {
			t.Fatal(err)
		}
		n := info.CachedInfo().State.Msgs
		for n > 0 {
			batch, err := cons.Fetch(int(min(n, 100)), jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				if m.Headers().Get("Nats-Stream-Source") != "" {
					sourced[string(m.Data())]++
				}
				if !bus.MQTTDirectCopy(m.Headers()) {
					consumed[string(m.Data())]++
				}
			}
			if got == 0 {
				break
			}
			n -= uint64(got)
		}
		if len(sourced) == len(want) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	for p := range want {
		if sourced[p] != 1 || consumed[p] != 1 {
			t.Errorf("%s: %d copies from the MQTT store, %d seen by consumers; want 1 and 1", p, sourced[p], consumed[p])
		}
	}
}
