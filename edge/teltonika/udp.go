package teltonika

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

type datagram struct {
	buf  []byte
	n    int
	from net.Addr
}

// maxDatagram is the largest UDP payload there is; the gateway refuses bodies larger
// than MaxFrameBytes after reading.
const maxDatagram = 65535

// serveUDP reads datagrams and hands them to a fixed pool of workers. Every datagram is
// self-contained (it names its device), so the pool needs no per-device state; when it
// falls behind, datagrams are dropped unacknowledged and the devices send them again.
func (g *Gateway) serveUDP(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = g.udp.Close() })
	defer stop()
	pool := sync.Pool{New: func() any { return make([]byte, maxDatagram) }}
	queue := make(chan datagram, g.cfg.UDPQueue)
	var wg sync.WaitGroup
	for range g.cfg.UDPWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				pkt  codec.Packet
				recs []telemetry.Record
				ack  []byte
			)
			for d := range queue {
				ack, recs = g.handleDatagram(ctx, d.buf[:d.n], d.from, &pkt, recs, ack[:0])
				pool.Put(d.buf)
			}
		}()
	}
	defer func() { close(queue); wg.Wait() }()
	for {
		buf := pool.Get().([]byte)
		n, from, err := g.udp.ReadFrom(buf)
		if err != nil {
			pool.Put(buf)
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			g.log.Warn("teltonika udp read", "err", err)
			continue
		}
		select {
		case queue <- datagram{buf: buf, n: n, from: from}:
		default:
			pool.Put(buf)
			g.rej.Add("udp_overload", hostOf(from), errors.New("datagram queue full; dropped unacknowledged"))
		}
	}
}

func hostOf(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// handleDatagram decodes, stores and acknowledges one datagram. An unknown device gets an
// acknowledgement of zero records: a clear refusal, no larger than what it sent.
func (g *Gateway) handleDatagram(ctx context.Context, dgram []byte, from net.Addr, pkt *codec.Packet, recs []telemetry.Record, ack []byte) ([]byte, []telemetry.Record) {
	h, body, err := codec.ParseUDP(dgram)
	if err != nil {
		g.rej.Add(codec.Reason(err), hostOf(from), err)
		return ack, recs
	}
	if len(body) > g.cfg.MaxFrameBytes {
		g.rej.Add("bad_length", h.IMEI, errors.New("datagram body larger than the frame limit"))
		return ack, recs
	}
	vehicle, ok, err := g.reg.Lookup(ctx, h.IMEI)
	switch {
	case err != nil:
		g.rej.Add("registry_unavailable", h.IMEI, err)
		return ack, recs
	case !ok:
		g.rej.Add("unknown_device", h.IMEI, errors.New("device not registered or revoked"), "peer", hostOf(from))
		ack = codec.AppendUDPAck(ack, h, 0)
		_, _ = g.udp.WriteTo(ack, from)
		return ack, recs
	}
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		g.rej.Add("bad_vehicle_id", h.IMEI, err)
		return ack, recs
	}
	if err := pkt.Decode(body); err != nil {
		g.rej.Add(codec.Reason(err), h.IMEI, err)
		return ack, recs
	}
	recs, err = g.store(ctx, vehicle, pkt, codec.CRC16(body), recs)
	if err != nil {
		g.rej.Add("store_failed", vehicle, err)
		return ack, recs
	}
	ack = codec.AppendUDPAck(ack, h, len(pkt.Records))
	if _, err := g.udp.WriteTo(ack, from); err == nil {
		g.met.packets.WithLabelValues("udp").Inc()
		g.met.records.WithLabelValues("udp").Add(float64(len(pkt.Records)))
	}
	return ack, recs
}
