package launch

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/natsauth"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// coapDevice is a tracker speaking CoAP to the gateway with its registry credentials.
type coapDevice struct {
	t        *testing.T
	c        *udpclient.Conn
	id, key  string
	commands chan *fleetv1.DeviceCommand
}

func dialCoAPDevice(t *testing.T, addr, id, key string) *coapDevice {
	t.Helper()
	c, err := udp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &coapDevice{t: t, c: c, id: id, key: key, commands: make(chan *fleetv1.DeviceCommand, 10)}
}

func (d *coapDevice) creds() []message.Option {
	return []message.Option{{ID: message.URIQuery, Value: []byte("id=" + d.id)}, {ID: message.URIQuery, Value: []byte("key=" + d.key)}}
}

// post sends one payload and returns the response code.
func (d *coapDevice) post(ctx context.Context, kind string, body []byte) codes.Code {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := d.c.Post(ctx, "/up/"+kind, message.AppOctets, bytes.NewReader(body), d.creds()...)
	if err != nil {
		d.t.Fatalf("POST /up/%s: %v", kind, err)
	}
	return resp.Code()
}

// report sends one fix and requires 2.04.
func (d *coapDevice) report(ctx context.Context, seq int, at time.Time, lat, lon, speed float64) {
	d.t.Helper()
	if c := d.post(ctx, "tele", fixBatch(d.id, seq, at, lat, lon, speed)); c != codes.Changed {
		d.t.Fatalf("report %d: got %v, want 2.04", seq, c)
	}
}

// observe registers for commands; the registration's own answer is returned.
func (d *coapDevice) observe(ctx context.Context) codes.Code {
	d.t.Helper()
	first := make(chan codes.Code, 1)
	_, err := d.c.Observe(ctx, "/down/cmd", func(m *pool.Message) {
		code := m.Code()
		var body []byte
		if m.Body() != nil {
			body, _ = io.ReadAll(m.Body())
		}
		select {
		case first <- code:
		default:
		}
		if code != codes.Content || len(body) == 0 {
			return
		}
		var dc fleetv1.DeviceCommand
		if err := proto.Unmarshal(body, &dc); err == nil {
			d.commands <- &dc
		}
	}, d.creds()...)
	if err != nil {
		return codes.Unauthorized // the library refuses an observation answered with an error
	}
	select {
	case c := <-first:
		return c
	case <-ctx.Done():
		d.t.Fatal("no answer to the observation")
	}
	return 0
}

// A CoAP device reports through the all-in-one: its fixes reach tracking, a zone event
// fires, an IMMOBILIZE reaches it through its observation of /down/cmd and its reply
// completes the command. Unknown and revoked devices are refused.
func TestCoAPDeviceThroughThePlatform(t *testing.T) {
	const vehicle = "veh-coap-00001"
	p := startPlatform(t, Options{RedisURL: "memory",
		Services: append(append([]string(nil), AllServices...), CoAP),
		CoAP:     CoAPOptions{Addr: "127.0.0.1:0"},
	})
	if p.CoAPAddr == "" {
		t.Fatal("no CoAP address")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	devices, err := natsauth.OpenDevices(ctx, p.Bus, 1, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := devices.Add(ctx, natsauth.Device{ID: vehicle, Model: "test", Protocol: "coap"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	_, revokedSecret, err := devices.Add(ctx, natsauth.Device{ID: "veh-coap-revoked", Protocol: "coap"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := devices.Revoke(ctx, "veh-coap-revoked", "test"); err != nil {
		t.Fatal(err)
	}

	batch, _ := proto.Marshal(&fleetv1.TelemetryBatch{Records: []*fleetv1.TelemetryRecord{{DeviceTime: timestamppb.Now(), FixValid: true}}})
	for _, tc := range []struct{ name, id, key string }{
		{"unknown device", "veh-coap-nobody", "anything"},
		{"wrong secret", vehicle, "not-" + secret},
		{"revoked device", "veh-coap-revoked", revokedSecret},
	} {
		t.Run(tc.name+" refused", func(t *testing.T) {
			d := dialCoAPDevice(t, p.CoAPAddr, tc.id, tc.key)
			if c := d.post(ctx, "tele", batch); c != codes.Unauthorized {
				t.Errorf("POST: got %v, want 4.01", c)
			}
			if c := d.observe(ctx); c != codes.Unauthorized {
				t.Errorf("observe: got %v, want 4.01", c)
			}
		})
	}

	d := dialCoAPDevice(t, p.CoAPAddr, vehicle, secret)
	// The gateway's mirror of the registry learns of the device within moments.
	waitUntil(t, ctx, "the device's observation accepted", func() (bool, string) {
		c := d.observe(ctx)
		return c == codes.Content, c.String()
	})
	driveDevice(t, ctx, p, vehicle, protoDevice{
		report:   func(seq int, at time.Time, lat, lon, speed float64) { d.report(ctx, seq, at, lat, lon, speed) },
		commands: d.commands,
		reply: func(data []byte) {
			if c := d.post(ctx, "reply", data); c != codes.Changed {
				t.Fatalf("reply: got %v, want 2.04", c)
			}
		},
	})
}
