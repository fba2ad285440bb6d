package natsauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// CalloutConfig configures a responder process of its own (cmd/callout) against an
// external nats-server configured from this package's table (deployments/nats).
type CalloutConfig struct {
	URL string
	// Passwords of the callout identity (answers logins, reads the registry) and of the
	// kicker identity in the system account (disconnects revoked devices).
	CalloutPassword, KickerPassword string
	// IssuerSeed signs the answers (the server's auth_callout issuer); XKeySeed decrypts
	// the requests when the server's auth_callout has an xkey.
	IssuerSeed, XKeySeed []byte
	// Replicas of the FLEET_DEVICES bucket, should this responder be the first to open it.
	Replicas int
	// Options are extra connection options (TLS, a name).
	Options []nats.Option
	Log     *slog.Logger
}

// ServeCallout answers device logins until ctx ends: it logs in as the callout and kicker
// identities, mirrors the device registry and runs a Responder. ready, when not nil, is
// called once logins are answered, with the responder (for its Stats). Several such
// processes share the logins (queue group): run two for availability.
func ServeCallout(ctx context.Context, cfg CalloutConfig, ready func(*Responder)) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.CalloutPassword == "" || cfg.KickerPassword == "" {
		return errors.New("callout: the callout and kicker identities' passwords are required")
	}
	connect := func(user, password string) (*nats.Conn, error) {
		opts := append([]nats.Option{nats.UserInfo(user, password), nats.CustomInboxPrefix(InboxPrefix(user)),
			nats.Name("fleetwire-" + user), nats.MaxReconnects(-1),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					cfg.Log.Warn("nats disconnected", "user", user, "err", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) { cfg.Log.Info("nats reconnected", "user", user) }),
		}, cfg.Options...)
		nc, err := nats.Connect(cfg.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect to %s as %s: %w", cfg.URL, user, err)
		}
		return nc, nil
	}
	callout, err := connect(UserCallout, cfg.CalloutPassword)
	if err != nil {
		return err
	}
	defer callout.Close()
	kicker, err := connect(UserKicker, cfg.KickerPassword)
	if err != nil {
		return err
	}
	defer kicker.Close()
	js, err := jetstream.New(callout)
	if err != nil {
		return fmt.Errorf("callout: jetstream: %w", err)
	}
	replicas := max(cfg.Replicas, 1)
	devices, err := OpenDevices(ctx, js, replicas, cfg.Log.With("component", "device-registry"))
	if err != nil {
		return err
	}
	resp, err := NewResponder(ResponderConfig{Devices: devices, IssuerSeed: cfg.IssuerSeed, XKeySeed: cfg.XKeySeed,
		Kicker: SystemKicker{NC: kicker}, Log: cfg.Log})
	if err != nil {
		return err
	}
	wait, err := resp.Start(ctx, callout)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(resp)
	}
	if err := wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Collectors are the responder's counters as Prometheus metrics: device logins accepted
// and refused, live devices disconnected after a revocation or rotation.
func (r *Responder) Collectors() []prometheus.Collector {
	login := func(result string, v func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "fleetwire_device_logins_total",
			Help:        "Device logins decided by the auth callout responder, by result.",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		login("accepted", r.accepted.Load),
		login("refused", r.refused.Load),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fleetwire_device_disconnects_total",
			Help: "Live device connections closed because their credential was revoked or rotated.",
		}, func() float64 { return float64(r.kicked.Load()) }),
	}
}
