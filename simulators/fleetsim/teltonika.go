package fleetsim

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// Protocols a simulated tracker speaks.
const (
	ProtocolNATS      = "nats"      // the Fleetwire tracker protocol on NATS (docs/protocol.md)
	ProtocolTeltonika = "teltonika" // Teltonika Codec 8E over TCP to the gateway (docs/protocol-teltonika.md)
)

// IMEI is the simulated Teltonika device of vehicle: 15 digits derived from the id, so a
// fleet registers the same devices on every run.
func IMEI(vehicle string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(vehicle))
	return fmt.Sprintf("35%013d", h.Sum64()%1e13)
}

// Devices lists "IMEI vehicle-id" lines for the gateway's device file.
func (f *Fleet) Devices() []string {
	out := make([]string, len(f.sim.vehicles))
	for i, v := range f.sim.vehicles {
		out[i] = IMEI(v.id) + " " + v.id
	}
	return out
}

// ttFrameRecords bounds the records per frame so a frame stays under the gateway's
// 16 KiB limit with every element a simulated tracker reports.
const ttFrameRecords = 100

// ttDevice is one vehicle's Teltonika tracker: it keeps its frames until the gateway
// acknowledges them, reconnecting and resending as a device does.
type ttDevice struct {
	f    *Fleet
	v    *vehicle
	imei string

	mu    sync.Mutex
	queue [][]byte
	ready chan struct{}
	cmds  int
	sink  *ttSink
}

func (d *ttDevice) enqueue(frame []byte) {
	d.mu.Lock()
	d.queue = append(d.queue, frame)
	d.mu.Unlock()
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

// runTeltonika plays the fleet as Teltonika devices connected to addr.
func (f *Fleet) runTeltonika(ctx context.Context, addr string) error {
	devs := make([]*ttDevice, len(f.sim.vehicles))
	for i, v := range f.sim.vehicles {
		devs[i] = &ttDevice{f: f, v: v, imei: IMEI(v.id), ready: make(chan struct{}, 1)}
	}
	sink := &ttSink{f: f, devs: devs, ctx: ctx}
	for _, d := range devs {
		d.sink = sink
	}
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); d.run(ctx, addr) }()
	}
	f.log.Info("fleet simulator running as Teltonika devices", "vehicles", len(devs), "gateway", addr, "seed", f.cfg.Seed)
	wallStart := time.Now()
	simStart := f.sim.Now()
	tick := time.NewTicker(f.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case now := <-tick.C:
			elapsed := time.Duration(float64(now.Sub(wallStart)) * f.cfg.Speedup)
			f.sim.advance(simStart.Add(elapsed), sink)
		}
	}
}

type ttSink struct {
	f    *Fleet
	devs []*ttDevice
	ctx  context.Context
}

func (s *ttSink) emit(v *vehicle, kind string, _ []byte, recs []sample) {
	f := s.f
	if s.ctx.Err() != nil {
		f.unsent.Add(1)
		return
	}
	for len(recs) > 0 {
		n := min(len(recs), ttFrameRecords)
		chunk := recs[:n]
		recs = recs[n:]
		out := make([]codec.Record, len(chunk))
		for i := range chunk {
			out[i] = ttRecord(&chunk[i])
		}
		body, err := codec.AppendBody(nil, codec.Codec8E, out)
		if err != nil {
			f.log.Error("encode Teltonika frame", "err", err)
			continue
		}
		if f.observer != nil {
			// Teltonika records carry no sequence and millisecond times: the observer
			// matches them by device time as the platform stores it.
			last := time.UnixMilli(chunk[len(chunk)-1].unixNano / 1e6).UTC()
			f.observer(Packet{Vehicle: v.id, Kind: kind, Records: len(chunk), Sent: time.Now(), DeviceTime: last, Late: f.sim.late})
		}
		f.published.Add(1)
		s.devs[v.idx].enqueue(codec.AppendFrame(nil, body))
	}
}

// ttRecord encodes a sample with the IO elements of an FMB tracker (docs/protocol-teltonika.md).
func ttRecord(s *sample) codec.Record {
	r := codec.Record{
		TimestampMs: s.unixNano / 1e6,
		Lat:         int32(math.Round(s.lat * 1e7)),
		Lon:         int32(math.Round(s.lon * 1e7)),
		Altitude:    int16(math.Round(s.alt)),
		Angle:       uint16(s.heading),
		Speed:       uint16(math.Round(s.speedKmh)),
	}
	if s.fix {
		r.Satellites = uint8(s.sats)
	}
	b := func(v bool) uint64 {
		if v {
			return 1
		}
		return 0
	}
	u := func(id uint16, size uint8, v float64) {
		r.IO = append(r.IO, codec.IO{ID: id, Size: size, Value: uint64(int64(math.Round(v)))})
	}
	r.IO = append(r.IO, codec.IO{ID: 239, Size: 1, Value: b(s.ignition)})
	u(240, 1, s.moving)
	u(21, 1, s.gsm)
	u(69, 1, s.gnss)
	u(1, 1, s.door)
	u(182, 2, s.hdop*10)
	u(66, 2, s.extV*1000)
	u(67, 2, s.batV*1000)
	u(16, 4, s.odoM)
	u(199, 4, s.trip)
	u(89, 1, s.fuelPct)
	u(84, 2, s.fuelL*10)
	if s.rpm > 0 {
		u(36, 2, s.rpm)
	}
	r.IO = append(r.IO, codec.IO{ID: 32, Size: 1, Value: uint64(uint8(int8(math.Round(s.coolantC))))})
	if s.jam > 0 {
		u(249, 1, s.jam)
	}
	switch s.alarm {
	case telemetry.AlarmTow:
		u(246, 1, 1)
	case telemetry.AlarmPowerCut:
		u(252, 1, 1)
	case telemetry.AlarmCrash:
		u(247, 1, 1)
	case telemetry.AlarmGNSSJamming:
		if s.jam == 0 {
			u(249, 1, 2)
		}
	}
	if s.fault != "" {
		r.IO = append(r.IO, codec.IO{ID: 281, Raw: []byte(s.fault)})
	}
	return r
}

// run keeps the device connected and its queue flowing until ctx ends.
func (d *ttDevice) run(ctx context.Context, addr string) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := d.session(ctx, addr)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			d.f.pubErrors.Add(1)
			if d.f.failing.CompareAndSwap(false, true) {
				d.f.log.Warn("Teltonika session failed; reconnecting with back-off", "vehicle", d.v.id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// session is one TCP connection: handshake, then frames, each waiting for its ack.
func (d *ttDevice) session(ctx context.Context, addr string) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(codec.AppendIMEI(nil, d.imei)); err != nil {
		return err
	}
	var ans [1]byte
	if _, err := io.ReadFull(c, ans[:]); err != nil {
		return err
	}
	if ans[0] != codec.HandshakeAccept {
		return fmt.Errorf("device %s refused (not registered)", d.imei)
	}
	_ = c.SetDeadline(time.Time{})
	var wmu sync.Mutex
	acks := make(chan int, 1)
	readErr := make(chan error, 1)
	go func() { readErr <- d.read(c, &wmu, acks) }()
	for {
		d.mu.Lock()
		var frame []byte
		if len(d.queue) > 0 {
			frame = d.queue[0]
		}
		d.mu.Unlock()
		if frame == nil {
			select {
			case <-ctx.Done():
				return nil
			case err := <-readErr:
				return err
			case <-d.ready:
			}
			continue
		}
		wmu.Lock()
		_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		_, err := c.Write(frame)
		wmu.Unlock()
		if err != nil {
			return err
		}
		select {
		case <-acks:
			d.mu.Lock()
			d.queue[0] = nil
			d.queue = d.queue[1:]
			d.mu.Unlock()
			d.f.acked.Add(1)
			if d.f.failing.CompareAndSwap(true, false) {
				d.f.log.Info("Teltonika sessions recovered")
			}
		case err := <-readErr:
			return err // not acknowledged: resent on the next connection
		case <-time.After(60 * time.Second):
			return fmt.Errorf("no ack within 60 s")
		case <-ctx.Done():
			return nil
		}
	}
}

// read takes the gateway's acks (a 4-byte count, never 0 over TCP) and Codec 12 commands
// (whose zero preamble reads as a count of 0), answering commands as an FMB device does.
func (d *ttDevice) read(c net.Conn, wmu *sync.Mutex, acks chan<- int) error {
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(c, hdr[:4]); err != nil {
			return err
		}
		if n := binary.BigEndian.Uint32(hdr[:4]); n != 0 {
			acks <- int(n)
			continue
		}
		if _, err := io.ReadFull(c, hdr[4:]); err != nil {
			return err
		}
		n, err := codec.BodyLen(hdr[:])
		if err != nil {
			return err
		}
		rest := make([]byte, n+codec.FrameTrailerLen)
		if _, err := io.ReadFull(c, rest); err != nil {
			return err
		}
		if err := codec.CheckCRC(rest[:n], rest[n:]); err != nil {
			return err
		}
		m, err := codec.DecodeMessage(rest[:n])
		if err != nil {
			return err
		}
		resp := d.command(string(m.Text))
		wmu.Lock()
		_, err = c.Write(codec.AppendFrame(nil, codec.AppendMessage(nil, codec.TypeResponse, resp)))
		wmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// command executes a GPRS command on the simulated vehicle and returns the device's answer.
func (d *ttDevice) command(text string) string {
	var kind CommandKind
	switch strings.TrimSpace(text) {
	case "setdigout 1":
		kind = CommandImmobilize
	case "setdigout 0":
		kind = CommandResume
	case "getgps":
		kind = CommandLocateNow
	default:
		return "Unknown command"
	}
	d.cmds++
	d.f.commands.Add(1)
	replies, ok := d.f.sim.command(Command{ID: fmt.Sprintf("%s-%d", d.imei, d.cmds), Vehicle: d.v.id, Kind: kind},
		d.sink)
	if !ok || len(replies) == 0 {
		return "error: no such vehicle"
	}
	last := replies[len(replies)-1]
	d.f.replies.Add(1)
	if last.Status == ReplyRejected {
		return "error: " + last.Detail
	}
	switch kind {
	case CommandImmobilize:
		return "DOUT1:1 DOUT2:0"
	case CommandResume:
		return "DOUT1:0 DOUT2:0"
	}
	return "GPS:1 " + last.Detail
}
