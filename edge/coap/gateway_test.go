package coap

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natstest"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

const (
	knownVeh, knownSecret = "veh-coap-1", "s3cret-of-veh-coap-1"
	revokedVeh            = "veh-coap-revoked"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// devices is the registry's contract as the gateway consumes it: one known device, one
// revoked, every other id unknown.
var devices = VerifierFunc(func(_ context.Context, id, secret string) error {
	switch {
	case id == knownVeh && secret == knownSecret:
		return nil
	case id == revokedVeh:
		return fmt.Errorf("%w: revoked", ErrRefused)
	}
	return fmt.Errorf("%w: unknown device or wrong secret", ErrRefused)
})

type harness struct {
	b  *bus.Bus
	g  *Gateway
	js jetstream.JetStream
}

func newHarness(t *testing.T, noStreams bool) *harness {
	t.Helper()
	b := natstest.Open(t, natstest.Options{NoStreams: noStreams})
	cfg := DefaultConfig()
	cfg.Addr, cfg.StoreTimeout = "127.0.0.1:0", 3*time.Second
	g, err := New(cfg, b.Conn(), devices, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Listen(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	js, _ := jetstream.New(b.Conn())
	return &harness{b: b, g: g, js: js}
}

func dialCoAP(t *testing.T, addr string) *udpclient.Conn {
	t.Helper()
	c, err := udp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func creds(id, secret string) []message.Option {
	return []message.Option{
		{ID: message.URIQuery, Value: []byte("id=" + id)},
		{ID: message.URIQuery, Value: []byte("key=" + secret)},
	}
}

func batch(t *testing.T, vehicle string, at time.Time, n int) []byte {
	t.Helper()
	b := &fleetv1.TelemetryBatch{VehicleId: vehicle, SentTime: timestamppb.New(at)}
	for i := range n {
		b.Records = append(b.Records, &fleetv1.TelemetryRecord{
			DeviceTime: timestamppb.New(at.Add(time.Duration(i) * time.Second)), Sequence: uint64(i + 1),
			Latitude: 52.52, Longitude: 13.405, FixValid: true,
		})
	}
	data, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func post(t *testing.T, c *udpclient.Conn, path string, cf message.MediaType, body []byte, opts []message.Option) (codes.Code, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Post(ctx, path, cf, bytes.NewReader(body), opts...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp.Code(), string(readBody(resp))
}

func readBody(m *pool.Message) []byte {
	if m.Body() == nil {
		return nil
	}
	b, _ := io.ReadAll(m.Body())
	return b
}

// lastStored returns the last message stored for vehicle's kind, or nil.
func (h *harness) lastStored(t *testing.T, vehicle, kind string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "fleet.in.*."+vehicle+"."+kind)
	if err != nil {
		return nil
	}
	return m
}

// Every request is answered with the code of its first problem; only a stored payload is
// answered 2.04, and what was refused is not in the stream.
func TestUpResponses(t *testing.T) {
	h := newHarness(t, false)
	c := dialCoAP(t, h.g.Addr())
	now := time.Now().Add(-time.Minute).Truncate(time.Second)
	good := batch(t, knownVeh, now, 3)
	jsonBody, _ := protojson.Marshal(&fleetv1.TelemetryBatch{VehicleId: knownVeh, Records: []*fleetv1.TelemetryRecord{
		{DeviceTime: timestamppb.New(now), Sequence: 9, Latitude: 52.5, Longitude: 13.4, FixValid: true},
	}})
	reply, _ := proto.Marshal(&fleetv1.CommandReply{CommandId: "cmd-1", Status: fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED})
	huge := make([]byte, 70<<10)
	tests := []struct {
		name   string
		path   string
		cf     message.MediaType
		body   []byte
		opts   []message.Option
		want   codes.Code
		reason string
	}{
		{"no credentials", "/up/tele", message.AppOctets, good, nil, codes.Unauthorized, "no_credentials"},
		{"wrong secret", "/up/tele", message.AppOctets, good, creds(knownVeh, "guess"), codes.Unauthorized, "refused_device"},
		{"unknown device", "/up/tele", message.AppOctets, batch(t, "veh-nobody", now, 1), creds("veh-nobody", "x"), codes.Unauthorized, "refused_device"},
		{"revoked device", "/up/tele", message.AppOctets, good, creds(revokedVeh, knownSecret), codes.Unauthorized, "refused_device"},
		{"bad id", "/up/tele", message.AppOctets, good, creds("veh.1.>", "x"), codes.Unauthorized, "refused_device"},
		{"unknown kind", "/up/position", message.AppOctets, good, creds(knownVeh, knownSecret), codes.NotFound, "unknown_kind"},
		{"garbage", "/up/tele", message.AppOctets, []byte{0xff, 0xff, 0xff}, creds(knownVeh, knownSecret), codes.BadRequest, "malformed"},
		{"another vehicle's batch", "/up/tele", message.AppOctets, batch(t, "veh-other", now, 1), creds(knownVeh, knownSecret), codes.BadRequest, "vehicle_mismatch"},
		{"empty batch", "/up/tele", message.AppOctets, nil, creds(knownVeh, knownSecret), codes.BadRequest, "empty_batch"},
		{"text payload", "/up/tele", message.TextPlain, good, creds(knownVeh, knownSecret), codes.UnsupportedMediaType, "content_format"},
		{"too large", "/up/tele", message.AppOctets, huge, creds(knownVeh, knownSecret), codes.RequestEntityTooLarge, "too_large"},
		{"reply without command id", "/up/reply", message.AppOctets, []byte{}, creds(knownVeh, knownSecret), codes.BadRequest, "bad_reply"},
		{"protobuf batch", "/up/tele", message.AppOctets, good, creds(knownVeh, knownSecret), codes.Changed, ""},
		{"JSON alarm batch", "/up/alarm", message.AppJSON, jsonBody, creds(knownVeh, knownSecret), codes.Changed, ""},
		{"command reply", "/up/reply", message.AppOctets, reply, creds(knownVeh, knownSecret), codes.Changed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.g.Rejected(tc.reason)
			got, text := post(t, c, tc.path, tc.cf, tc.body, tc.opts)
			if got != tc.want {
				t.Fatalf("got %v (%s), want %v", got, text, tc.want)
			}
			if tc.reason != "" && h.g.Rejected(tc.reason) != before+1 {
				t.Errorf("rejected{%s}: got %v, want %v", tc.reason, h.g.Rejected(tc.reason), before+1)
			}
			if got == codes.Unauthorized && text != "unknown device or wrong secret" {
				t.Errorf("4.01 diagnostic %q tells causes apart", text)
			}
		})
	}
	if m := h.lastStored(t, knownVeh, "tele"); m == nil || !bytes.Equal(m.Data, good) {
		t.Errorf("stored telemetry: got %v, want the protobuf batch", m)
	}
	if m := h.lastStored(t, knownVeh, "alarm"); m == nil || m.Header.Get("Content-Type") != "application/json" {
		t.Errorf("stored alarm: got %v, want the JSON batch with its content type", m)
	}
	if m := h.lastStored(t, knownVeh, "reply"); m == nil || !bytes.Equal(m.Data, reply) {
		t.Errorf("stored reply: got %v, want the reply", m)
	}
	for _, v := range []string{"veh-nobody", "veh-other", revokedVeh} {
		if m := h.lastStored(t, v, "tele"); m != nil {
			t.Errorf("%s: a refused batch was stored", v)
		}
	}
}

// With no stream to store into, nothing is acknowledged: the device is told 5.03 with a
// Max-Age to wait, and sends again.
func TestUnavailableStoreAnswers503(t *testing.T) {
	h := newHarness(t, true)
	c := dialCoAP(t, h.g.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.Post(ctx, "/up/tele", message.AppOctets, bytes.NewReader(batch(t, knownVeh, time.Now(), 1)), creds(knownVeh, knownSecret)...)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code() != codes.ServiceUnavailable {
		t.Fatalf("got %v, want 5.03", resp.Code())
	}
	if age, err := resp.Options().GetUint32(message.MaxAge); err != nil || age != retryAfter {
		t.Errorf("Max-Age: got %d (%v), want %d", age, err, retryAfter)
	}
}

// A device observing /down/cmd receives its commands, in the format it accepts, and not
// another vehicle's; its reply on /up/reply is stored.
func TestObserveCommands(t *testing.T) {
	h := newHarness(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("unknown device cannot observe", func(t *testing.T) {
		c := dialCoAP(t, h.g.Addr())
		// A registration (Observe: 0, encoded as an empty option) answered directly.
		resp, err := c.Get(ctx, "/down/cmd", append(creds("veh-nobody", "x"), message.Option{ID: message.Observe})...)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code() != codes.Unauthorized || resp.HasOption(message.Observe) {
			t.Errorf("got %v (observe option %v), want 4.01 without observe", resp.Code(), resp.HasOption(message.Observe))
		}
	})

	for _, tc := range []struct {
		name string
		json bool
	}{{"protobuf", false}, {"JSON", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialCoAP(t, h.g.Addr())
			var mu sync.Mutex
			var cmds []*fleetv1.DeviceCommand
			opts := creds(knownVeh, knownSecret)
			if tc.json {
				opts = append(opts, message.Option{ID: message.Accept, Value: []byte{byte(message.AppJSON)}})
			}
			obs, err := c.Observe(ctx, "/down/cmd", func(m *pool.Message) {
				body := readBody(m)
				if len(body) == 0 {
					return // the registration's answer: no command yet
				}
				var dc fleetv1.DeviceCommand
				var err error
				if tc.json {
					err = protojson.Unmarshal(body, &dc)
				} else {
					err = proto.Unmarshal(body, &dc)
				}
				if err != nil {
					t.Errorf("notification: %v", err)
					return
				}
				mu.Lock()
				cmds = append(cmds, &dc)
				mu.Unlock()
			}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = obs.Cancel(ctx) }()
			id := "cmd-" + strings.ToLower(tc.name)
			other, _ := proto.Marshal(&fleetv1.DeviceCommand{CommandId: "cmd-other", VehicleId: "veh-other"})
			mine, _ := proto.Marshal(&fleetv1.DeviceCommand{CommandId: id, VehicleId: knownVeh, Kind: fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE})
			for {
				_ = h.b.Conn().Publish(bus.CommandSubject("veh-other"), other)
				_ = h.b.Conn().Publish(bus.CommandSubject(knownVeh), mine)
				mu.Lock()
				n := len(cmds)
				mu.Unlock()
				if n > 0 {
					break
				}
				select {
				case <-time.After(500 * time.Millisecond):
				case <-ctx.Done():
					t.Fatal("no command notified")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, dc := range cmds {
				if dc.GetCommandId() != id || dc.GetKind() != fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE {
					t.Errorf("notified %v, want only %s", dc, id)
				}
			}
		})
	}
}
