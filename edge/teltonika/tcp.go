package teltonika

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetwire/fleetwire/edge/teltonika/codec"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// session is one device's TCP connection after a successful handshake.
type session struct {
	g       *Gateway
	conn    net.Conn
	imei    string
	vehicle string

	wmu sync.Mutex // serialises writes: acks from the reader, commands from NATS

	cmu     sync.Mutex
	pending []pendingCommand         // sent, awaiting the device's Codec 12 response, oldest first
	done    map[string]commandResult // recently answered command ids (idempotence)
	order   []string

	closeOnce sync.Once
}

func (g *Gateway) serveTCP(ctx context.Context) error {
	var tempDelay time.Duration
	for {
		c, err := g.tcp.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and the like: back off instead of spinning.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				g.log.Warn("teltonika accept", "err", err, "retry_in", tempDelay)
				select {
				case <-time.After(tempDelay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("teltonika accept: %w", err)
		}
		tempDelay = 0
		if g.conns.Add(1) > int64(g.cfg.MaxConns) {
			g.conns.Add(-1)
			g.rej.Add("too_many_connections", remoteHost(c), fmt.Errorf("%d sessions open", g.cfg.MaxConns))
			_ = c.Close()
			continue
		}
		g.met.conns.Inc()
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer func() { g.conns.Add(-1); g.met.conns.Dec() }()
			g.serveConn(ctx, c)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func remoteHost(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// readBufSize is each session's read buffer: a typical AVL packet fits in one read, and
// 10 000 idle sessions cost 20 MB.
const readBufSize = 2 << 10

// serveConn runs one TCP session: handshake, then frames until the device hangs up, the
// gateway stops, or the device sends something it must not.
func (g *Gateway) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	br := bufio.NewReaderSize(c, readBufSize)
	peer := remoteHost(c)

	// Handshake: 2-byte length and the IMEI, all within HandshakeTimeout.
	_ = c.SetReadDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	var hdr [codec.FrameHeaderLen]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil {
		g.refuseRead(peer, "", err, true)
		return
	}
	n, err := codec.IMEILen(hdr[:2])
	if err != nil {
		g.rej.Add(codec.Reason(err), peer, err)
		g.refuse(c)
		return
	}
	var imeiBuf [codec.MaxIMEILen]byte
	if _, err := io.ReadFull(br, imeiBuf[:n]); err != nil {
		g.refuseRead(peer, "", err, true)
		return
	}
	imei, err := codec.CheckIMEI(imeiBuf[:n])
	if err != nil {
		g.rej.Add(codec.Reason(err), peer, err)
		g.refuse(c)
		return
	}
	lctx, cancel := context.WithTimeout(ctx, g.cfg.HandshakeTimeout)
	vehicle, ok, err := g.reg.Lookup(lctx, imei)
	cancel()
	switch {
	case err != nil:
		g.rej.Add("registry_unavailable", imei, fmt.Errorf("look up device: %w", err))
		g.refuse(c)
		return
	case !ok:
		g.rej.Add("unknown_device", imei, errors.New("device not registered or revoked"), "peer", peer)
		g.refuse(c)
		return
	}
	if err := telemetry.ValidVehicleID(vehicle); err != nil {
		g.rej.Add("bad_vehicle_id", imei, err)
		g.refuse(c)
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	if _, err := c.Write([]byte{codec.HandshakeAccept}); err != nil {
		return
	}
	g.met.sessions.WithLabelValues("accepted").Inc()

	s := &session{g: g, conn: c, imei: imei, vehicle: vehicle, done: make(map[string]commandResult)}
	g.mu.Lock()
	if old := g.sessions[vehicle]; old != nil {
		// The device reconnected before its old socket timed out: commands go to the new one.
		old.close()
	}
	g.sessions[vehicle] = s
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		if g.sessions[vehicle] == s {
			delete(g.sessions, vehicle)
		}
		g.mu.Unlock()
	}()
	sub, err := g.nc.Subscribe(bus.CommandSubject(vehicle), func(m *nats.Msg) { s.command(ctx, m.Data) })
	if err != nil {
		g.log.Error("teltonika: subscribe to commands", "vehicle", vehicle, "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()

	var (
		pkt  codec.Packet
		recs []telemetry.Record
		buf  []byte
	)
	for {
		// Between frames the device may stay silent up to IdleTimeout; once a frame starts
		// it has FrameTimeout to deliver all of it.
		_ = c.SetReadDeadline(time.Now().Add(g.cfg.IdleTimeout))
		if _, err := io.ReadFull(br, hdr[:1]); err != nil {
			g.refuseRead(imei, "idle", err, false)
			return
		}
		_ = c.SetReadDeadline(time.Now().Add(g.cfg.FrameTimeout))
		if _, err := io.ReadFull(br, hdr[1:]); err != nil {
			g.refuseRead(imei, "frame", err, true)
			return
		}
		n, err := codec.BodyLen(hdr[:])
		if err == nil && n > g.cfg.MaxFrameBytes {
			err = fmt.Errorf("%w: %d bytes > %d", codec.ErrLength, n, g.cfg.MaxFrameBytes)
		}
		if err != nil {
			g.rej.Add(codec.Reason(err), imei, err)
			return
		}
		if cap(buf) < n+codec.FrameTrailerLen {
			buf = make([]byte, n+codec.FrameTrailerLen)
		}
		buf = buf[:n+codec.FrameTrailerLen]
		if _, err := io.ReadFull(br, buf); err != nil {
			g.refuseRead(imei, "frame", err, true)
			return
		}
		body := buf[:n]
		if err := codec.CheckCRC(body, buf[n:]); err != nil {
			g.rej.Add(codec.Reason(err), imei, err)
			return
		}
		if body[0] == codec.Codec12 {
			if err := s.response(ctx, body); err != nil {
				g.rej.Add(codec.Reason(err), imei, err)
				return
			}
			continue
		}
		if err := pkt.Decode(body); err != nil {
			g.rej.Add(codec.Reason(err), imei, err)
			return
		}
		recs, err = g.store(ctx, vehicle, &pkt, codec.CRC16(body), recs)
		if err != nil {
			// Not stored: no ack. Closing makes the device reconnect and send again, rather
			// than wait out its own ack timeout on a link it believes is healthy.
			g.rej.Add("store_failed", vehicle, err)
			return
		}
		if err := s.write(codec.AppendAck(hdr[:0:4], len(pkt.Records))); err != nil {
			return
		}
		g.met.packets.WithLabelValues("tcp").Inc()
		g.met.records.WithLabelValues("tcp").Add(float64(len(pkt.Records)))
	}
}

// refuseRead accounts for a read that ended a session: a clean hang-up at a frame boundary
// is normal; a timeout or a hang-up inside a frame is counted.
func (g *Gateway) refuseRead(key, phase string, err error, midFrame bool) {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		switch phase {
		case "idle":
			g.rej.Add("idle_timeout", key, err)
		case "":
			g.rej.Add("slow_handshake", key, err)
		default:
			g.rej.Add("slow_frame", key, err)
		}
	case errors.Is(err, net.ErrClosed):
		// the gateway is stopping, or a newer session replaced this one
	case midFrame && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)):
		g.rej.Add(codec.Reason(codec.ErrTruncated), key, fmt.Errorf("%w: connection closed inside a frame", codec.ErrTruncated))
	}
}

// refuse answers a handshake with 0x00 and closes.
func (g *Gateway) refuse(c net.Conn) {
	g.met.sessions.WithLabelValues("refused").Inc()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte{codec.HandshakeRefuse})
}

func (s *session) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.g.cfg.FrameTimeout))
	_, err := s.conn.Write(b)
	return err
}

func (s *session) close() { s.closeOnce.Do(func() { _ = s.conn.Close() }) }
