package teltonika

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

const (
	knownIMEI   = "356307042441013"
	knownVeh    = "veh-tt-1"
	unknownIMEI = "356307042441099"
	revokedIMEI = "356307042441077"
	// Public vector V5 (Traccar's test suite): Codec 8, moving with ignition on.
	vecV5 = "000000000000004508010000015eb70a86d00024089d4d21dee3860137005f12005f000e06ef01f00150011503c800450108b5000bb6000642382718005fcd057ace19d3430f57440000000001000002bf"
	// Public vector V4: Codec 8 over UDP from IMEI 352093086403655.
	vecV4 = "003DCAFE0105000F33353230393330383634303336353508010000016B4F815B30010000000000000000000000000000000103021503010101425DBC000001"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type harness struct {
	b   *bus.Bus
	g   *Gateway
	reg *MemoryRegistry
}

// newHarness starts an embedded NATS with the platform's streams (unless noStreams, to
// stand for a store that refuses everything) and a gateway on loopback.
func newHarness(t *testing.T, cfg Config, noStreams bool) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := bus.Open(ctx, bus.Config{URL: bus.Embedded, ListenPort: -1}, quiet())
	if err != nil {
		t.Fatalf("bus: %v", err)
	}
	if !noStreams {
		if err := b.EnsureStreams(ctx, bus.StreamConfig{MemoryStorage: true}); err != nil {
			t.Fatalf("streams: %v", err)
		}
	}
	reg := NewMemoryRegistry()
	_ = reg.Add(knownIMEI, knownVeh)
	_ = reg.Add("352093086403655", "veh-udp-1")
	_ = reg.Add(revokedIMEI, "veh-revoked")
	reg.Revoke(revokedIMEI)
	if cfg.TCPAddr == "" {
		cfg.TCPAddr = "127.0.0.1:0"
	}
	if cfg.UDPAddr == "" {
		cfg.UDPAddr = "127.0.0.1:0"
	}
	if cfg.StoreTimeout == 0 {
		cfg.StoreTimeout = 2 * time.Second
	}
	g, err := New(cfg, b.Conn(), reg, quiet(), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	if err := g.Listen(false); err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway run: %v", err)
		}
		b.Close()
	})
	return &harness{b: b, g: g, reg: reg}
}

// device is a Teltonika device over TCP.
type device struct {
	t *testing.T
	c net.Conn
}

func (h *harness) dial(t *testing.T, imei string) (*device, byte) {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.g.TCPAddr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	d := &device{t: t, c: c}
	if _, err := c.Write(codec.AppendIMEI(nil, imei)); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return d, d.readByte()
}

func (d *device) readByte() byte {
	d.t.Helper()
	var b [1]byte
	_ = d.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(d.c, b[:]); err != nil {
		d.t.Fatalf("read handshake answer: %v", err)
	}
	return b[0]
}

// readAck reads the 4-byte record count, or returns the error that ended the session.
func (d *device) readAck() (int, error) {
	var b [4]byte
	_ = d.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.ReadFull(d.c, b[:]); err != nil {
		return 0, err
	}
	return int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3]), nil
}

// closedWithoutAck asserts the gateway closed the session and sent nothing.
func (d *device) closedWithoutAck() {
	d.t.Helper()
	_ = d.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	b, err := io.ReadAll(d.c)
	if len(b) != 0 {
		d.t.Errorf("got % x from the gateway, want nothing", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		d.t.Errorf("session still open, want it closed")
	}
}

func (d *device) send(b []byte) {
	d.t.Helper()
	if _, err := d.c.Write(b); err != nil {
		d.t.Fatalf("send: %v", err)
	}
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frame builds a TCP AVL frame of recs in codec c.
func frame(t testing.TB, c byte, recs ...codec.Record) []byte {
	t.Helper()
	body, err := codec.AppendBody(nil, c, recs)
	if err != nil {
		t.Fatal(err)
	}
	return codec.AppendFrame(nil, body)
}

// stored reads every record stored for vehicle of kind so far, waiting until at least
// want are there (or the deadline passes).
func (h *harness) stored(t *testing.T, vehicle, kind string, want int) []telemetry.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []telemetry.Record
	for {
		out = out[:0]
		cons, err := h.b.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{"fleet.in.*." + vehicle + "." + kind},
		})
		if err != nil {
			t.Fatalf("consumer: %v", err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatalf("consumer info: %v", err)
		}
		if n := int(info.NumPending); n > 0 {
			batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			for m := range batch.Messages() {
				recs, bad, err := wire.DecodeBatch(vehicle, m.Data(), false)
				if err != nil || len(bad) > 0 {
					t.Fatalf("stored batch does not decode: %v %v", err, bad)
				}
				out = append(out, recs...)
			}
		}
		if len(out) >= want || ctx.Err() != nil {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *harness) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := h.b.Stream(context.Background(), bus.TelemetryStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestTCPHandshake(t *testing.T) {
	h := newHarness(t, Config{}, false)
	tests := []struct {
		name string
		imei string
		want byte
	}{
		{"known device", knownIMEI, codec.HandshakeAccept},
		{"unknown device", unknownIMEI, codec.HandshakeRefuse},
		{"revoked device", revokedIMEI, codec.HandshakeRefuse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, got := h.dial(t, tt.imei)
			if got != tt.want {
				t.Fatalf("got %#02x, want %#02x", got, tt.want)
			}
			if tt.want == codec.HandshakeRefuse {
				d.closedWithoutAck()
			}
		})
	}
	if got := h.g.Rejected("unknown_device"); got != 2 {
		t.Errorf("unknown_device rejections: got %v, want 2", got)
	}
}

func TestTCPStoresThenAcks(t *testing.T) {
	h := newHarness(t, Config{}, false)
	d, ans := h.dial(t, knownIMEI)
	if ans != codec.HandshakeAccept {
		t.Fatalf("handshake: got %#02x, want 01", ans)
	}
	t0 := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	rec := func(sec int, io ...codec.IO) codec.Record {
		return codec.Record{TimestampMs: t0.Add(time.Duration(sec) * time.Second).UnixMilli(), Lon: 134049000, Lat: 525201000, Satellites: 9, Speed: 30, IO: io}
	}
	ign := codec.IO{ID: 239, Size: 1, Value: 1}
	frames := []struct {
		name  string
		frame []byte
		n     int
	}{
		{"public V5, codec 8", mustHex(t, vecV5), 1},
		{"codec 8E, 3 records, one with a tow alarm", frame(t, codec.Codec8E, rec(1, ign), rec(2, codec.IO{ID: 246, Size: 1, Value: 1}), rec(3, ign)), 3},
		{"codec 16", frame(t, codec.Codec16, rec(4, ign, codec.IO{ID: 300, Size: 2, Value: 7})), 1},
	}
	for _, f := range frames {
		t.Run(f.name, func(t *testing.T) {
			d.send(f.frame)
			n, err := d.readAck()
			if err != nil || n != f.n {
				t.Fatalf("ack: got %d, %v; want %d", n, err, f.n)
			}
		})
	}
	// Acknowledged means stored: everything is in the stream now.
	tele := h.stored(t, knownVeh, bus.KindTelemetry, 4)
	alarm := h.stored(t, knownVeh, bus.KindAlarm, 1)
	if len(tele) != 4 || len(alarm) != 1 {
		t.Fatalf("stored: got %d telemetry and %d alarm records, want 4 and 1", len(tele), len(alarm))
	}
	v5 := tele[0]
	if !v5.DeviceTime.Equal(time.UnixMilli(1506309474000)) || v5.Lat != 56.8255366 || v5.Lon != 60.4544333 || v5.SpeedKmh != 95 ||
		!v5.Has(telemetry.HasIgnition) || !v5.Ignition || v5.ExternalVoltage != 14.375 || v5.GSMLevel != 3 || v5.HDOP != 0.6 {
		t.Errorf("V5 stored as %+v", v5)
	}
	if len(alarm[0].Alarms) != 1 || alarm[0].Alarms[0] != telemetry.AlarmTow {
		t.Errorf("alarm record: got alarms %v, want [tow]", alarm[0].Alarms)
	}
	if tele[3].IO["300"] != 7 {
		t.Errorf("codec 16 unknown element: got IO %v, want 300=7", tele[3].IO)
	}
	// A resend of a packet whose ack was lost is acknowledged again and not stored twice.
	before := h.streamMsgs(t)
	d.send(frames[0].frame)
	if n, err := d.readAck(); err != nil || n != 1 {
		t.Fatalf("resend ack: got %d, %v; want 1", n, err)
	}
	if after := h.streamMsgs(t); after != before {
		t.Errorf("resend stored again: %d messages, want %d", after, before)
	}
}

func TestTCPBadInput(t *testing.T) {
	h := newHarness(t, Config{FrameTimeout: 500 * time.Millisecond, IdleTimeout: 700 * time.Millisecond, HandshakeTimeout: 500 * time.Millisecond}, false)
	good := mustHex(t, vecV5)
	mut := func(f func(b []byte)) []byte { b := bytes.Clone(good); f(b); return b }
	// Two records announced, one present, CRC correct over the lie.
	countLie := func() []byte {
		body := bytes.Clone(good[8 : len(good)-4])
		body[1], body[len(body)-1] = 2, 2
		return codec.AppendFrame(nil, body)
	}()
	tests := []struct {
		name   string
		send   []byte
		hangUp bool // the device closes its side after sending
		reason string
	}{
		{"wrong preamble", mut(func(b []byte) { b[2] = 1 }), false, "bad_preamble"},
		{"absurd data length", mut(func(b []byte) { b[4] = 0x40 }), false, "bad_length"},
		{"over the frame limit", mut(func(b []byte) { b[6] = 0x80 }), false, "bad_length"},
		{"CRC mismatch", mut(func(b []byte) { b[len(b)-1] ^= 0xFF }), false, "crc_mismatch"},
		{"record count disagrees with body", countLie, false, "count_mismatch"},
		{"unknown codec", codec.AppendFrame(nil, []byte{0x0D, 1, 0, 1}), false, "unknown_codec"},
		{"partial frame then hang-up", good[:40], true, "partial_frame"},
		{"slow loris: frame never completes", good[:40], false, "slow_frame"},
		{"idle socket", nil, false, "idle_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.g.Rejected(tt.reason)
			msgs := h.streamMsgs(t)
			d, ans := h.dial(t, knownIMEI)
			if ans != codec.HandshakeAccept {
				t.Fatalf("handshake: got %#02x", ans)
			}
			if tt.send != nil {
				d.send(tt.send)
			}
			if tt.hangUp {
				_ = d.c.(*net.TCPConn).CloseWrite()
			}
			d.closedWithoutAck()
			deadline := time.Now().Add(10 * time.Second)
			for h.g.Rejected(tt.reason) == before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := h.g.Rejected(tt.reason); got != before+1 {
				t.Errorf("%s count: got %v, want %v", tt.reason, got, before+1)
			}
			if got := h.streamMsgs(t); got != msgs {
				t.Errorf("stream: got %d messages, want %d (nothing stored)", got, msgs)
			}
		})
	}
	t.Run("slow handshake", func(t *testing.T) {
		before := h.g.Rejected("slow_handshake")
		c, err := net.Dial("tcp", h.g.TCPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte{0x00, 0x0F, '3'})
		(&device{t: t, c: c}).closedWithoutAck()
		deadline := time.Now().Add(10 * time.Second)
		for h.g.Rejected("slow_handshake") == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := h.g.Rejected("slow_handshake"); got != before+1 {
			t.Errorf("slow_handshake: got %v, want %v", got, before+1)
		}
	})
}

// Without the stream (a store that cannot take the records) nothing is acknowledged.
func TestTCPNoAckWithoutStorage(t *testing.T) {
	h := newHarness(t, Config{StoreTimeout: time.Second}, true)
	d, ans := h.dial(t, knownIMEI)
	if ans != codec.HandshakeAccept {
		t.Fatalf("handshake: got %#02x", ans)
	}
	d.send(mustHex(t, vecV5))
	d.closedWithoutAck()
	if got := h.g.Rejected("store_failed"); got != 1 {
		t.Errorf("store_failed: got %v, want 1", got)
	}
}

func TestUDP(t *testing.T) {
	h := newHarness(t, Config{}, false)
	c, err := net.Dial("udp", h.g.UDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exchange := func(t *testing.T, dgram []byte) []byte {
		t.Helper()
		// UDP may lose a datagram even on loopback: resend until answered, as a device does.
		buf := make([]byte, 64)
		for try := 0; try < 10; try++ {
			if _, err := c.Write(dgram); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := c.Read(buf)
			if err == nil {
				return buf[:n]
			}
		}
		t.Fatalf("no answer to %x", dgram)
		return nil
	}
	t.Run("known device, public vector V4", func(t *testing.T) {
		if got := hex.EncodeToString(exchange(t, mustHex(t, vecV4))); got != "0005cafe010501" {
			t.Errorf("ack: got %s, want 0005cafe010501", got)
		}
		recs := h.stored(t, "veh-udp-1", bus.KindTelemetry, 1)
		if len(recs) != 1 || !recs[0].DeviceTime.Equal(time.UnixMilli(1560407006000)) || recs[0].ExternalVoltage != 23.996 || recs[0].IO["1"] != 1 {
			t.Errorf("stored: got %+v", recs)
		}
	})
	t.Run("unknown device gets zero accepted", func(t *testing.T) {
		body, _ := codec.AppendBody(nil, codec.Codec8, []codec.Record{{TimestampMs: 1795334400000}})
		dg := codec.AppendUDP(nil, codec.UDPHeader{PacketID: 7, AVLPacketID: 9, IMEI: unknownIMEI}, body)
		msgs := h.streamMsgs(t)
		if got := hex.EncodeToString(exchange(t, dg)); got != "00050007010900" {
			t.Errorf("ack: got %s, want 00050007010900", got)
		}
		if got := h.streamMsgs(t); got != msgs {
			t.Errorf("stream: got %d messages, want %d", got, msgs)
		}
	})
	t.Run("malformed datagram is counted, not answered", func(t *testing.T) {
		before := h.g.Rejected("bad_length")
		if _, err := c.Write([]byte{0, 99, 1, 2, 1, 0, 0, 15}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for h.g.Rejected("bad_length") == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := h.g.Rejected("bad_length"); got != before+1 {
			t.Errorf("bad_length: got %v, want %v", got, before+1)
		}
	})
}

// An IMMOBILIZE on the vehicle's command subject reaches the device as Codec 12
// "setdigout 1"; its response completes the command with EXECUTED. An unsupported kind
// is rejected by the gateway without bothering the device.
func TestCommands(t *testing.T) {
	h := newHarness(t, Config{}, false)
	d, ans := h.dial(t, knownIMEI)
	if ans != codec.HandshakeAccept {
		t.Fatalf("handshake: got %#02x", ans)
	}
	// The subscription is made right after the handshake; wait until it is visible.
	waitSubscribed(t, h, knownVeh)
	send := func(id string, kind fleetv1.CommandKind) {
		data, _ := proto.Marshal(&fleetv1.DeviceCommand{CommandId: id, VehicleId: knownVeh, Kind: kind,
			ExpireTime: timestamppb.New(time.Now().Add(time.Hour))})
		if err := h.b.Conn().Publish(bus.CommandSubject(knownVeh), data); err != nil {
			t.Fatal(err)
		}
	}
	send("cmd-1", fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE)
	body := d.readFrame()
	m, err := codec.DecodeMessage(body)
	if err != nil || m.Type != codec.TypeCommand || string(m.Text) != "setdigout 1" {
		t.Fatalf("device got %q (type %#x, %v), want command \"setdigout 1\"", m.Text, m.Type, err)
	}
	d.send(codec.AppendFrame(nil, codec.AppendMessage(nil, codec.TypeResponse, "DOUT1:1 DOUT2:0")))
	h.replies(t, knownVeh, 2) // cmd-1 complete before cmd-2, so the order below is fixed
	send("cmd-2", fleetv1.CommandKind_COMMAND_KIND_SET_REPORT_INTERVAL)

	replies := h.replies(t, knownVeh, 3)
	want := []struct {
		id     string
		status fleetv1.CommandReplyStatus
	}{
		{"cmd-1", fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_ACCEPTED},
		{"cmd-1", fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED},
		{"cmd-2", fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_REJECTED},
	}
	if len(replies) != len(want) {
		t.Fatalf("got %d replies, want %d", len(replies), len(want))
	}
	for i, w := range want {
		if replies[i].GetCommandId() != w.id || replies[i].GetStatus() != w.status {
			t.Errorf("reply %d: got %s %v, want %s %v", i, replies[i].GetCommandId(), replies[i].GetStatus(), w.id, w.status)
		}
	}
	if replies[1].GetDetail() != "DOUT1:1 DOUT2:0" {
		t.Errorf("executed detail: got %q, want the device's answer", replies[1].GetDetail())
	}
}

func waitSubscribed(t *testing.T, h *harness, vehicle string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		h.g.mu.Lock()
		_, ok := h.g.sessions[vehicle]
		h.g.mu.Unlock()
		if ok {
			_ = h.g.nc.Flush()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no session for %s", vehicle)
}

func (d *device) readFrame() []byte {
	d.t.Helper()
	_ = d.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var hdr [8]byte
	if _, err := io.ReadFull(d.c, hdr[:]); err != nil {
		d.t.Fatalf("read frame: %v", err)
	}
	n, err := codec.BodyLen(hdr[:])
	if err != nil {
		d.t.Fatalf("frame header: %v", err)
	}
	rest := make([]byte, n+4)
	if _, err := io.ReadFull(d.c, rest); err != nil {
		d.t.Fatalf("read frame: %v", err)
	}
	if err := codec.CheckCRC(rest[:n], rest[n:]); err != nil {
		d.t.Fatalf("frame: %v", err)
	}
	return rest[:n]
}

func (h *harness) replies(t *testing.T, vehicle string, want int) []*fleetv1.CommandReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := h.b.OrderedConsumer(ctx, bus.TelemetryStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"fleet.in.*." + vehicle + "." + bus.KindReply},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []*fleetv1.CommandReply
	for len(out) < want && ctx.Err() == nil {
		m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			continue
		}
		var r fleetv1.CommandReply
		if err := proto.Unmarshal(m.Data(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, &r)
	}
	return out
}

// The squatter of docs/security.md: a device that knows everything about the victim's next
// packet but the gateway's key publishes, on its own subject and ahead of the victim, with
// every message id it can compute for that packet. The stream's duplicate window is
// per stream, so an id it got right would make the victim's alarm a "duplicate". The
// victim's alarm is stored all the same.
func TestSquatterCannotSuppressAnAlarm(t *testing.T) {
	h := newHarness(t, Config{}, false)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	tow := codec.Record{TimestampMs: t0.UnixMilli(), Lon: 134049000, Lat: 525201000, Satellites: 9,
		IO: []codec.IO{{ID: 246, Size: 1, Value: 1}}}
	body, err := codec.AppendBody(nil, codec.Codec8E, []codec.Record{tow})
	if err != nil {
		t.Fatal(err)
	}
	crc := codec.CRC16(body)
	predicted := []string{
		// the id the gateway used to derive from the packet alone
		knownVeh + "-" + strconv.FormatInt(tow.TimestampMs, 36) + "-1-" + strconv.FormatUint(uint64(crc), 16) + "-a",
	}
	for _, key := range [][]byte{nil, make([]byte, wire.MsgIDKeyBytes), []byte(knownVeh)} { // keys one might guess
		id := wire.GatewayMsgID(key, knownVeh, []byte("teltonika"), strconv.AppendInt(nil, tow.TimestampMs, 10),
			[]byte("1"), strconv.AppendUint(nil, uint64(crc), 10))
		predicted = append(predicted, id+"-a", id+"-t")
	}
	squatter := "veh-squatter"
	for _, id := range predicted {
		msg := &nats.Msg{Subject: bus.UpSubject(squatter, bus.KindAlarm), Data: []byte("x"), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, id)
		if _, err := h.b.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("squatter publish: %v", err)
		}
	}
	d, ans := h.dial(t, knownIMEI)
	if ans != codec.HandshakeAccept {
		t.Fatalf("handshake: got %#02x, want 01", ans)
	}
	d.send(codec.AppendFrame(nil, body))
	if n, err := d.readAck(); err != nil || n != 1 {
		t.Fatalf("ack: got %d, %v; want 1", n, err)
	}
	alarm := h.stored(t, knownVeh, bus.KindAlarm, 1)
	if len(alarm) != 1 || len(alarm[0].Alarms) != 1 || alarm[0].Alarms[0] != telemetry.AlarmTow {
		t.Fatalf("the victim's tow alarm: stored %+v, want it", alarm)
	}
	// And the gateway's own resend is still recognised as one.
	before := h.streamMsgs(t)
	d.send(codec.AppendFrame(nil, body))
	if n, err := d.readAck(); err != nil || n != 1 {
		t.Fatalf("resend ack: got %d, %v; want 1", n, err)
	}
	if after := h.streamMsgs(t); after != before {
		t.Errorf("resend stored again: %d messages, want %d", after, before)
	}
}
