// Package coap is the gateway for constrained trackers speaking CoAP (RFC 7252) over UDP,
// typically on NB-IoT or LTE-M. A device POSTs the tracker protocol's own payloads
// (TelemetryBatch or CommandReply, protobuf or JSON) to /up/<kind>, and observes
// /down/cmd (RFC 7641) to receive its commands. Every request names the device and its
// secret, checked against the platform's device registry; a record is answered 2.04
// Changed only once JetStream has stored it, as fleet.up.<vehicle>.<kind>, exactly where
// the device would have published it over NATS.
//
// It is a protocol edge: it imports pkg only, and no service imports it. The protocol,
// its response codes and limits are documented in docs/protocol-coap.md.
package coap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/plgd-dev/go-coap/v3/mux"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpclient "github.com/plgd-dev/go-coap/v3/udp/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/rejects"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Verifier checks a device's credentials against the platform's device registry.
type Verifier interface {
	// Verify returns nil for a known, active device whose secret matches; an error
	// wrapping ErrRefused when the device is unknown, revoked or its secret wrong; any
	// other error when the registry could not answer (the device is told to retry).
	Verify(ctx context.Context, id, secret string) error
}

// VerifierFunc adapts a function to Verifier.
type VerifierFunc func(ctx context.Context, id, secret string) error

// Verify implements Verifier.
func (f VerifierFunc) Verify(ctx context.Context, id, secret string) error { return f(ctx, id, secret) }

// Config tunes the gateway. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Addr is the UDP address devices send to. Loopback by default: exposing the gateway
	// is a deliberate act. 5683 is CoAP's registered port.
	Addr string
	// StoreTimeout bounds the wait for JetStream's acknowledgement of one request; past
	// it the device is answered 5.03 and sends again.
	StoreTimeout time.Duration
	// IdleTimeout forgets a peer (address and port) silent this long, and with it its
	// observation of /down/cmd. NB-IoT devices sleep (PSM) and their NAT binding changes;
	// a device re-registers its observation when it wakes, which also refreshes it.
	IdleTimeout time.Duration
	// NotifyTimeout bounds the delivery of one command notification (a confirmable
	// message, retransmitted until the device acknowledges it).
	NotifyTimeout time.Duration
	// MaxObservers bounds the devices observing /down/cmd at once.
	MaxObservers int
	// MsgIDKey keys the message ids of stored requests (wire.GatewayMsgID over the
	// payload): no device can predict, and so squat, another's; a resent payload gets the
	// same id. Share one key between a deployment's gateway instances; empty: a random key
	// for this process.
	MsgIDKey []byte
}

// DefaultConfig returns the defaults, each explained on its Config field.
func DefaultConfig() Config {
	return Config{
		Addr:          "127.0.0.1:5683",
		StoreTimeout:  10 * time.Second,
		IdleTimeout:   10 * time.Minute,
		NotifyTimeout: 2 * time.Minute,
		MaxObservers:  50_000,
	}
}

// ErrConfig wraps invalid configuration.
var ErrConfig = errors.New("coap gateway config")

// ErrStore means JetStream did not acknowledge a request's payload: the device is
// answered 5.03 Service Unavailable and sends it again.
var ErrStore = errors.New("not stored")

func (c *Config) fill() error {
	d := DefaultConfig()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.StoreTimeout, d.StoreTimeout)
	set(&c.IdleTimeout, d.IdleTimeout)
	set(&c.NotifyTimeout, d.NotifyTimeout)
	if c.MaxObservers <= 0 {
		c.MaxObservers = d.MaxObservers
	}
	if c.Addr == "" {
		return fmt.Errorf("%w: no UDP address", ErrConfig)
	}
	if len(c.MsgIDKey) == 0 {
		c.MsgIDKey = wire.NewMsgIDKey()
	}
	return nil
}

// metrics are the gateway's Prometheus series; no label carries a device or vehicle.
type metrics struct {
	requests  *prometheus.CounterVec // by kind and code
	records   prometheus.Counter
	observers prometheus.Gauge
	commands  *prometheus.CounterVec // by result: notified, undelivered, dropped
	storeDur  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_coap_requests_total", Help: "Device requests by path kind and response code.",
		}, []string{"kind", "code"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fleetwire_coap_records_total", Help: "Telemetry records stored and acknowledged.",
		}),
		observers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fleetwire_coap_observers", Help: "Devices observing /down/cmd.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_coap_commands_total", Help: "Commands by outcome (notified, undelivered, dropped).",
		}, []string{"result"}),
		storeDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fleetwire_coap_store_seconds", Help: "Time from a verified request to JetStream's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.records, m.observers, m.commands, m.storeDur} {
			_ = reg.Register(c)
		}
	}
	return m
}

// Gateway serves CoAP devices.
type Gateway struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	ver Verifier
	log *slog.Logger
	rej *rejects.Counter
	met *metrics

	conn *coapnet.UDPConn

	mu        sync.Mutex
	observers map[string]*observer // vehicle → its observation of /down/cmd
	wg        sync.WaitGroup
}

// New builds a gateway publishing with nc (the gateway's own NATS user, allowed to
// publish fleet.up.*.> and subscribe fleet.down.*.cmd on behalf of devices).
func New(cfg Config, nc *nats.Conn, ver Verifier, log *slog.Logger, preg prometheus.Registerer) (*Gateway, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if nc == nil || ver == nil {
		return nil, fmt.Errorf("%w: NATS connection and device verifier are required", ErrConfig)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return &Gateway{
		cfg: cfg, nc: nc, js: js, ver: ver, log: log,
		rej:       rejects.New("coap", log, preg),
		met:       newMetrics(preg),
		observers: make(map[string]*observer),
	}, nil
}

// Listen binds the configured address, so its actual port is known (Addr) before Run.
// fallback moves a taken port to a free one.
func (g *Gateway) Listen(fallback bool) error {
	c, err := coapnet.NewListenUDP("udp", g.cfg.Addr)
	if err != nil && fallback {
		host, _, _ := net.SplitHostPort(g.cfg.Addr)
		c, err = coapnet.NewListenUDP("udp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return fmt.Errorf("coap udp %s: %w", g.cfg.Addr, err)
	}
	g.conn = c
	return nil
}

// Addr is the bound UDP address ("" before Listen).
func (g *Gateway) Addr() string {
	if g.conn == nil {
		return ""
	}
	return g.conn.LocalAddr().String()
}

// Run serves devices until ctx ends, then ends every observation and returns. It calls
// Listen first when that has not been done.
func (g *Gateway) Run(ctx context.Context) error {
	if g.conn == nil {
		if err := g.Listen(false); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := mux.NewRouter()
	if err := r.Handle("/up/{kind}", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) { g.up(ctx, w, m) })); err != nil {
		return err
	}
	if err := r.Handle("/down/cmd", mux.HandlerFunc(func(w mux.ResponseWriter, m *mux.Message) { g.down(ctx, w, m) })); err != nil {
		return err
	}
	srv := udp.NewServer(
		options.WithMux(r),
		options.WithContext(ctx),
		// A datagram one byte past the protocol's message limit still parses, so the
		// handler can answer 4.13 rather than the library dropping it silently.
		options.WithMaxMessageSize(wire.MaxMessageBytes+1024),
		options.WithInactivityMonitor(g.cfg.IdleTimeout, func(cc *udpclient.Conn) { _ = cc.Close() }),
		options.WithErrors(func(err error) {
			if ctx.Err() == nil {
				// Malformed datagrams, peers that vanish mid-exchange: counted, logged
				// once, never fatal.
				g.rej.Add("protocol", "", errors.New(truncate(err.Error())))
			}
		}),
	)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(g.conn) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	srv.Stop()
	g.mu.Lock()
	for v, o := range g.observers {
		o.stop()
		delete(g.observers, v)
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
