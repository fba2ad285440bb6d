package launch

import (
	"context"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// connectMQTT logs in to the embedded server's MQTT listener as device id with secret.
func connectMQTT(t *testing.T, addr, id, secret string) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetUsername(id).SetPassword(secret).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(30 * time.Second).SetWriteTimeout(30 * time.Second))
	tok := c.Connect()
	if !tok.WaitTimeout(time.Minute) {
		return nil, context.DeadlineExceeded
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func wait(t *testing.T, what string, tok paho.Token) {
	t.Helper()
	if !tok.WaitTimeout(time.Minute) {
		t.Fatalf("%s: no answer", what)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// An MQTT device reports through the embedded server's MQTT listener: QoS 1 publishes on
// fleet/up/<id>/tele reach tracking, a zone event fires, an IMMOBILIZE arrives on
// fleet/down/<id>/cmd and its replies complete the command. An unknown device cannot log
// in when the server authenticates devices.
func TestMQTTDeviceThroughThePlatform(t *testing.T) {
	const vehicle = "veh-mqtt-00001"
	p := startPlatform(t, Options{RedisURL: "memory",
		NATS: bus.Config{URL: bus.Embedded, ListenPort: -1, MQTT: bus.MQTTConfig{Port: -1}},
	})
	if p.MQTTAddr == "" {
		t.Fatal("no MQTT address")
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

	t.Run("unknown device refused", func(t *testing.T) {
		if !p.Bus.Conn().AuthRequired() {
			t.Fatal("the all-in-one's NATS server must authenticate every login (secure by default)")
		}
		if _, err := connectMQTT(t, p.MQTTAddr, "veh-mqtt-nobody", "anything"); err == nil {
			t.Error("an unknown device logged in")
		}
		if _, err := connectMQTT(t, p.MQTTAddr, vehicle, "not-"+secret); err == nil {
			t.Error("a wrong secret logged in")
		}
	})

	var c paho.Client
	waitUntil(t, ctx, "the device logged in", func() (bool, string) {
		var err error
		c, err = connectMQTT(t, p.MQTTAddr, vehicle, secret)
		return err == nil, "connect"
	})
	commands := make(chan *fleetv1.DeviceCommand, 10)
	wait(t, "subscribe", c.Subscribe("fleet/down/"+vehicle+"/cmd", 1, func(_ paho.Client, m paho.Message) {
		var dc fleetv1.DeviceCommand
		if proto.Unmarshal(m.Payload(), &dc) == nil {
			commands <- &dc
		}
	}))
	publish := func(kind string, data []byte) {
		t.Helper()
		// QoS 1: the token completes on the server's PUBACK.
		wait(t, "publish "+kind, c.Publish("fleet/up/"+vehicle+"/"+kind, 1, false, data))
	}
	driveDevice(t, ctx, p, vehicle, protoDevice{
		report: func(seq int, at time.Time, lat, lon, speed float64) {
			publish("tele", fixBatch(vehicle, seq, at, lat, lon, speed))
		},
		commands: commands,
		reply:    func(data []byte) { publish("reply", data) },
	})
}
