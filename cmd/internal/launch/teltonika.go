package launch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/edge/teltonika"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/pkg/wire"
)

// Teltonika is the gateway for Teltonika trackers (TCP and UDP), a protocol edge rather
// than a service: it holds no state and serves no gRPC. The all-in-one hosts it; alone it
// runs as cmd/teltonika.
const Teltonika = "teltonika"

// TeltonikaOptions configure the Teltonika gateway.
type TeltonikaOptions struct {
	TCPAddr, UDPAddr string // empty: that transport is off
	// DevicesFile lists "IMEI vehicle-id" lines, re-read when it changes.
	DevicesFile string
	// Devices are registered at start ("IMEI=vehicle-id"), in addition to the file.
	Devices []string
	// Command texts sent over Codec 12 (docs/protocol-teltonika.md).
	CmdImmobilize, CmdResume, CmdLocate string
	IdleTimeout                         time.Duration
	MaxConns                            int
}

// deviceList is a repeatable "IMEI=vehicle-id" flag.
type deviceList struct{ l *[]string }

func (d deviceList) String() string {
	if d.l == nil {
		return ""
	}
	return strings.Join(*d.l, ",")
}

func (d deviceList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*d.l = append(*d.l, p)
		}
	}
	return nil
}

// TeltonikaFlags registers the gateway's flags on fs (the all-in-one and cmd/teltonika);
// def gives the addresses' defaults.
func (o *Options) TeltonikaFlags(fs *flag.FlagSet, def TeltonikaOptions) {
	var e envReader
	d := teltonika.DefaultConfig()
	t := &o.Teltonika
	fs.StringVar(&t.TCPAddr, "teltonika-tcp-addr", e.str("FLEETWIRE_TELTONIKA_TCP_ADDR", def.TCPAddr), "Teltonika gateway TCP address; empty disables (env FLEETWIRE_TELTONIKA_TCP_ADDR)")
	fs.StringVar(&t.UDPAddr, "teltonika-udp-addr", e.str("FLEETWIRE_TELTONIKA_UDP_ADDR", def.UDPAddr), "Teltonika gateway UDP address; empty disables (env FLEETWIRE_TELTONIKA_UDP_ADDR)")
	fs.StringVar(&t.DevicesFile, "teltonika-devices", e.str("FLEETWIRE_TELTONIKA_DEVICES", def.DevicesFile), `file of "IMEI vehicle-id" lines, re-read when it changes (env FLEETWIRE_TELTONIKA_DEVICES)`)
	fs.Var(deviceList{&t.Devices}, "teltonika-device", `register a device as IMEI=vehicle-id (repeatable)`)
	fs.StringVar(&t.CmdImmobilize, "teltonika-cmd-immobilize", e.str("FLEETWIRE_TELTONIKA_CMD_IMMOBILIZE", d.Commands.Immobilize), "Codec 12 command for IMMOBILIZE (env FLEETWIRE_TELTONIKA_CMD_IMMOBILIZE)")
	fs.StringVar(&t.CmdResume, "teltonika-cmd-resume", e.str("FLEETWIRE_TELTONIKA_CMD_RESUME", d.Commands.Resume), "Codec 12 command for RESUME (env FLEETWIRE_TELTONIKA_CMD_RESUME)")
	fs.StringVar(&t.CmdLocate, "teltonika-cmd-locate", e.str("FLEETWIRE_TELTONIKA_CMD_LOCATE", d.Commands.LocateNow), "Codec 12 command for LOCATE_NOW (env FLEETWIRE_TELTONIKA_CMD_LOCATE)")
	fs.DurationVar(&t.IdleTimeout, "teltonika-idle-timeout", e.duration("FLEETWIRE_TELTONIKA_IDLE_TIMEOUT", d.IdleTimeout), "close a device session silent this long (env FLEETWIRE_TELTONIKA_IDLE_TIMEOUT)")
	fs.IntVar(&t.MaxConns, "teltonika-max-conns", e.int("FLEETWIRE_TELTONIKA_MAX_CONNS", d.MaxConns), "most concurrent device sessions (env FLEETWIRE_TELTONIKA_MAX_CONNS)")
	o.envErr = errors.Join(o.envErr, e.err())
}

// teltonikaGateway adapts the gateway to the process's service shape.
type teltonikaGateway struct {
	*teltonika.Gateway
	registry *teltonika.MemoryRegistry // devices registered at start and simulated ones
}

func (teltonikaGateway) Register(*grpc.Server) {}

// streamless: the gateway publishes and consumes no stream, so readiness waits for none.
func (teltonikaGateway) streamless() {}

func buildTeltonika(d deps) (service, error) {
	o := d.opts.Teltonika
	if o.TCPAddr == "" && o.UDPAddr == "" {
		return nil, fmt.Errorf("%w: the Teltonika gateway needs a TCP or UDP address", ErrConfig)
	}
	mem := teltonika.NewMemoryRegistry()
	for _, dev := range o.Devices {
		imei, vehicle, ok := strings.Cut(dev, "=")
		if !ok {
			return nil, fmt.Errorf("%w: teltonika device %q: want IMEI=vehicle-id", ErrConfig, dev)
		}
		if _, err := teltonika.ParseDevices([]byte(imei + " " + vehicle)); err != nil {
			return nil, fmt.Errorf("%w: teltonika device %q: %v", ErrConfig, dev, err)
		}
		_ = mem.Add(imei, vehicle)
	}
	regs := teltonika.Registries{mem}
	log := d.log.With("service", Teltonika)
	if o.DevicesFile != "" {
		fr, err := teltonika.NewFileRegistry(o.DevicesFile, log)
		if err != nil {
			return nil, err
		}
		regs = append(regs, fr)
	}
	// The IMEI names the vehicle; the device registry says whether that device may connect.
	devices, err := natsauth.OpenDevices(d.ctx, d.bus, d.opts.Streams.Replicas, d.log.With("component", "device-registry"))
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	cfg := teltonika.DefaultConfig()
	cfg.TCPAddr, cfg.UDPAddr = o.TCPAddr, o.UDPAddr
	cfg.Commands = teltonika.CommandTexts{Immobilize: o.CmdImmobilize, Resume: o.CmdResume, LocateNow: o.CmdLocate}
	cfg.IdleTimeout, cfg.MaxConns = o.IdleTimeout, o.MaxConns
	if cfg.MsgIDKey, err = gatewayMsgIDKey(d.opts, log); err != nil {
		return nil, err
	}
	g, err := teltonika.New(cfg, d.bus.Conn(), registeredOnly{regs, devices}, log, d.registerer(Teltonika))
	if err != nil {
		return nil, err
	}
	// Devices are configured with one port for both: the gateway's ports move only when
	// neither was chosen by the operator.
	if err := g.Listen(d.opts.fallback("teltonika-tcp-addr") && d.opts.fallback("teltonika-udp-addr")); err != nil {
		return nil, err
	}
	return teltonikaGateway{Gateway: g, registry: mem}, nil
}

// registeredOnly accepts a Teltonika device only when its IMEI maps to a vehicle and that
// vehicle is a registered, active device in the platform's registry (fleetctl devices
// add): an unknown or revoked device is answered 0x00 and closed, as on every protocol.
type registeredOnly struct {
	imeis   teltonika.Registry
	devices *natsauth.Devices
}

// Lookup implements teltonika.Registry.
func (r registeredOnly) Lookup(ctx context.Context, imei string) (string, bool, error) {
	vehicle, ok, err := r.imeis.Lookup(ctx, imei)
	if err != nil || !ok {
		return "", false, err
	}
	dev, err := r.devices.Get(ctx, vehicle)
	if err != nil || dev.State != natsauth.DeviceActive {
		return "", false, nil
	}
	return vehicle, true, nil
}

// Run serves devices until ctx ends.
func (t teltonikaGateway) Run(ctx context.Context) error { return t.Gateway.Run(ctx) }

// gatewayMsgIDKey is the key the gateways derive stored messages' ids with
// (wire.GatewayMsgID): the operator's (--msgid-key-file, FLEETWIRE_MSGID_KEY), else, for
// the all-in-one, one kept in its credentials directory, else nil (a random key per
// process, with a warning: a device's resend that reaches another instance is stored
// twice, which the services tolerate).
func gatewayMsgIDKey(o Options, log interface{ Warn(string, ...any) }) ([]byte, error) {
	switch {
	case o.MsgIDKeyFile != "":
		data, err := os.ReadFile(o.MsgIDKeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		k, err := wire.ParseMsgIDKey(string(data))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrConfig, o.MsgIDKeyFile, err)
		}
		return k, nil
	case o.MsgIDKey != "":
		k, err := wire.ParseMsgIDKey(o.MsgIDKey)
		if err != nil {
			return nil, fmt.Errorf("%w: FLEETWIRE_MSGID_KEY: %w", ErrConfig, err)
		}
		return k, nil
	case o.NATS.URL == "" || o.NATS.URL == bus.Embedded:
		dir := natsCredentialsDir(o)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("message id key: %w", err)
		}
		return wire.LoadOrCreateMsgIDKey(filepath.Join(dir, "msgid.key"))
	}
	log.Warn("no message id key (--msgid-key-file): this gateway uses a random one; give every gateway instance the same key so a device's resend to another instance is recognised")
	return nil, nil
}
