// Package teltonika is the gateway for Teltonika trackers (FMB, FMC, FMM and kin): it
// accepts their TCP sessions and UDP datagrams, checks each device against a Registry,
// decodes Codec 8, 8 Extended and 16 AVL data (package codec), stores the records in
// JetStream as the device's vehicle would publish them (fleet.up.<vehicle>.tele or
// .alarm), and only then acknowledges them to the device. It carries commands the other
// way: a DeviceCommand on fleet.down.<vehicle>.cmd becomes a Codec 12 GPRS command, and
// the device's Codec 12 response becomes the CommandReply a NATS tracker would publish.
//
// It is a protocol edge: it imports pkg only, and no service imports it. The protocol,
// IO mapping and limits are documented in docs/protocol-teltonika.md.
package teltonika

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/rejects"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Config tunes the gateway. Zero values take the defaults of DefaultConfig.
type Config struct {
	// TCPAddr and UDPAddr are where devices connect; empty disables that transport.
	// Loopback by default: exposing the gateway is a deliberate act.
	TCPAddr, UDPAddr string
	// HandshakeTimeout bounds the IMEI handshake from accept to the last byte.
	HandshakeTimeout time.Duration
	// FrameTimeout bounds one frame from its first byte to its CRC: a peer that trickles a
	// frame (slow loris) is cut off after it, whatever it still sends.
	FrameTimeout time.Duration
	// IdleTimeout closes a session that starts no frame for this long. Teltonika devices
	// keep their link open between sends ("open link timeout", 300 s by default) and
	// reconnect when they have data.
	IdleTimeout time.Duration
	// MaxConns bounds concurrent TCP sessions; beyond it new connections are closed.
	MaxConns int
	// MaxFrameBytes bounds a frame's body. Devices send at most 1280 bytes per packet
	// (FMB6xx: 512); a few times that leaves room for larger Codec 8E records.
	MaxFrameBytes int
	// StoreTimeout bounds the wait for JetStream's acknowledgement of a packet. A packet
	// not stored in time is not acknowledged; the device sends it again.
	StoreTimeout time.Duration
	// UDPWorkers decode and store datagrams concurrently; UDPQueue datagrams wait for them,
	// beyond which a datagram is dropped unacknowledged (the device resends).
	UDPWorkers, UDPQueue int
	// Commands maps a command kind to the Codec 12 text sent to the device.
	Commands CommandTexts
	// MsgIDKey keys the message ids of stored packets (wire.GatewayMsgID): devices cannot
	// predict them, so none can squat them, and a resent packet gets the same id. Every
	// gateway instance of a deployment should share one key (a resend may reach another
	// instance); empty: a random key for this process, so a resend that reaches another
	// instance or a restarted one is stored twice (the services recognise the records).
	MsgIDKey []byte
}

// CommandTexts are the GPRS commands the gateway sends for each command kind. Which
// digital output drives the immobiliser relay depends on the installation: the defaults
// assume DOUT1, the usual wiring.
type CommandTexts struct {
	Immobilize, Resume, LocateNow string
}

// DefaultConfig returns the defaults, each explained on its Config field.
func DefaultConfig() Config {
	return Config{
		TCPAddr:          "127.0.0.1:5027",
		UDPAddr:          "127.0.0.1:5027",
		HandshakeTimeout: 10 * time.Second,
		FrameTimeout:     30 * time.Second,
		IdleTimeout:      15 * time.Minute,
		MaxConns:         50_000,
		MaxFrameBytes:    16 << 10,
		StoreTimeout:     10 * time.Second,
		UDPWorkers:       32,
		UDPQueue:         4096,
		Commands: CommandTexts{
			Immobilize: "setdigout 1",
			Resume:     "setdigout 0",
			LocateNow:  "getgps",
		},
	}
}

// ErrConfig wraps invalid configuration.
var ErrConfig = errors.New("teltonika gateway config")

func (c *Config) fill() error {
	d := DefaultConfig()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.HandshakeTimeout, d.HandshakeTimeout)
	set(&c.FrameTimeout, d.FrameTimeout)
	set(&c.IdleTimeout, d.IdleTimeout)
	set(&c.StoreTimeout, d.StoreTimeout)
	if c.MaxConns <= 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxFrameBytes <= 0 {
		c.MaxFrameBytes = d.MaxFrameBytes
	}
	if c.UDPWorkers <= 0 {
		c.UDPWorkers = d.UDPWorkers
	}
	if c.UDPQueue <= 0 {
		c.UDPQueue = d.UDPQueue
	}
	if c.Commands == (CommandTexts{}) {
		c.Commands = d.Commands
	}
	if c.TCPAddr == "" && c.UDPAddr == "" {
		return fmt.Errorf("%w: neither a TCP nor a UDP address", ErrConfig)
	}
	if len(c.MsgIDKey) == 0 {
		c.MsgIDKey = wire.NewMsgIDKey()
	}
	return nil
}

// metrics are the gateway's Prometheus series; no label carries a device or vehicle.
type metrics struct {
	conns    prometheus.Gauge
	sessions *prometheus.CounterVec // by result: accepted, refused
	records  *prometheus.CounterVec // stored, by transport
	packets  *prometheus.CounterVec // stored, by transport
	commands *prometheus.CounterVec // by result
	storeDur prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetwire_teltonika_connections", Help: "Open TCP device sessions.",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_teltonika_handshakes_total", Help: "TCP IMEI handshakes by result (accepted, refused).",
		}, []string{"result"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_teltonika_records_total", Help: "AVL records stored and acknowledged, by transport.",
		}, []string{"transport"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_teltonika_packets_total", Help: "AVL packets stored and acknowledged, by transport.",
		}, []string{"transport"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_teltonika_commands_total", Help: "Commands by outcome (sent, executed, rejected, unsupported, expired, offline).",
		}, []string{"result"}),
		storeDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetwire_teltonika_store_seconds", Help: "Time from a decoded packet to JetStream's acknowledgement of all its records.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.sessions, m.records, m.packets, m.commands, m.storeDur} {
			_ = reg.Register(c)
		}
	}
	return m
}

// Gateway serves Teltonika devices.
type Gateway struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	reg Registry
	log *slog.Logger
	rej *rejects.Counter
	met *metrics

	tcp net.Listener
	udp net.PacketConn

	conns    atomic.Int64
	mu       sync.Mutex
	sessions map[string]*session // vehicle → its open TCP session
	wg       sync.WaitGroup
}

// New builds a gateway publishing with nc (the gateway's own NATS user, allowed to
// publish fleet.up.*.> and subscribe fleet.down.*.cmd on behalf of devices).
func New(cfg Config, nc *nats.Conn, reg Registry, log *slog.Logger, preg prometheus.Registerer) (*Gateway, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if nc == nil || reg == nil {
		return nil, fmt.Errorf("%w: NATS connection and registry are required", ErrConfig)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Gateway{
		cfg: cfg, nc: nc, js: js, reg: reg, log: log,
		rej:      rejects.New("teltonika", log, preg),
		met:      newMetrics(preg),
		sessions: make(map[string]*session),
	}, nil
}

// Listen binds the configured addresses, so their actual ports are known (TCPAddr,
// UDPAddr) before Run. fallback moves a taken port to a free one.
func (g *Gateway) Listen(fallback bool) error {
	var err error
	if g.cfg.TCPAddr != "" {
		if g.tcp, err = net.Listen("tcp", g.cfg.TCPAddr); err != nil && fallback {
			g.tcp, err = net.Listen("tcp", anyPort(g.cfg.TCPAddr))
		}
		if err != nil {
			return fmt.Errorf("teltonika tcp %s: %w", g.cfg.TCPAddr, err)
		}
	}
	if g.cfg.UDPAddr != "" {
		addr := g.cfg.UDPAddr
		// The same port as TCP when the configured one is the same (devices are set up
		// with one port for both), unless it is taken.
		if g.tcp != nil && addr == g.cfg.TCPAddr {
			addr = g.tcp.Addr().String()
		}
		if g.udp, err = net.ListenPacket("udp", addr); err != nil && fallback {
			g.udp, err = net.ListenPacket("udp", anyPort(addr))
		}
		if err != nil {
			g.closeListeners()
			return fmt.Errorf("teltonika udp %s: %w", g.cfg.UDPAddr, err)
		}
	}
	return nil
}

func anyPort(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(host, "0")
}

// TCPAddr is the bound TCP address ("" when TCP is off or not yet listening).
func (g *Gateway) TCPAddr() string {
	if g.tcp == nil {
		return ""
	}
	return g.tcp.Addr().String()
}

// UDPAddr is the bound UDP address ("" when UDP is off or not yet listening).
func (g *Gateway) UDPAddr() string {
	if g.udp == nil {
		return ""
	}
	return g.udp.LocalAddr().String()
}

func (g *Gateway) closeListeners() {
	if g.tcp != nil {
		_ = g.tcp.Close()
	}
	if g.udp != nil {
		_ = g.udp.Close()
	}
}

// Run serves devices until ctx ends, then closes every session and returns. It calls
// Listen first when that has not been done.
func (g *Gateway) Run(ctx context.Context) error {
	if g.tcp == nil && g.udp == nil {
		if err := g.Listen(false); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	if g.tcp != nil {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); errc <- g.serveTCP(ctx) }()
	}
	if g.udp != nil {
		g.wg.Add(1)
		go func() { defer g.wg.Done(); errc <- g.serveUDP(ctx) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	g.closeListeners()
	g.mu.Lock()
	for _, s := range g.sessions {
		s.close()
	}
	g.mu.Unlock()
	g.wg.Wait()
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// Rejected returns how many inputs were refused for reason (tests, status pages).
func (g *Gateway) Rejected(reason string) float64 { return g.rej.Count(reason) }

// truncate bounds what a log line quotes of a peer's input or error.
func truncate(s string) string {
	const max = 200
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
