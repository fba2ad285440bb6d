package launch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/fleetwire/fleetwire/edge/coap"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
)

// CoAP is the gateway for CoAP trackers (RFC 7252 over UDP), a protocol edge like
// Teltonika: no state, no gRPC. The all-in-one hosts it; alone it runs as cmd/coap.
const CoAP = "coap"

// CoAPOptions configure the CoAP gateway.
type CoAPOptions struct {
	Addr        string // UDP address; empty: the gateway is off
	IdleTimeout time.Duration
}

// CoAPFlags registers the gateway's flags on fs (the all-in-one and cmd/coap); def gives
// the address's default.
func (o *Options) CoAPFlags(fs *flag.FlagSet, def CoAPOptions) {
	var e envReader
	d := coap.DefaultConfig()
	fs.StringVar(&o.CoAP.Addr, "coap-addr", e.str("FLEETWIRE_COAP_ADDR", def.Addr), "CoAP gateway UDP address; empty disables (env FLEETWIRE_COAP_ADDR)")
	fs.DurationVar(&o.CoAP.IdleTimeout, "coap-idle-timeout", e.duration("FLEETWIRE_COAP_IDLE_TIMEOUT", d.IdleTimeout), "forget a CoAP peer, and its observation, silent this long (env FLEETWIRE_COAP_IDLE_TIMEOUT)")
	o.envErr = errors.Join(o.envErr, e.err())
}

// coapGateway adapts the gateway to the process's service shape.
type coapGateway struct{ *coap.Gateway }

func (coapGateway) Register(*grpc.Server) {}

// streamless: the gateway consumes no stream, so readiness waits for none of its.
func (coapGateway) streamless() {}

func buildCoAP(d deps) (service, error) {
	o := d.opts.CoAP
	if o.Addr == "" {
		return nil, fmt.Errorf("%w: the CoAP gateway needs a UDP address", ErrConfig)
	}
	// Its own mirror of the registry, kept for the process's lifetime: a device added or
	// revoked through any instance is seen within moments.
	devices, err := natsauth.OpenDevices(d.ctx, d.bus, d.opts.Streams.Replicas, d.log.With("component", "device-registry"))
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	cfg := coap.DefaultConfig()
	cfg.Addr, cfg.IdleTimeout = o.Addr, o.IdleTimeout
	log := d.log.With("service", CoAP)
	if cfg.MsgIDKey, err = gatewayMsgIDKey(d.opts, log); err != nil {
		return nil, err
	}
	g, err := coap.New(cfg, d.bus.Conn(), registryVerifier{devices}, log, d.registerer(CoAP))
	if err != nil {
		return nil, err
	}
	if err := g.Listen(d.opts.FallbackPorts); err != nil {
		return nil, err
	}
	return coapGateway{g}, nil
}

// registryVerifier checks device credentials against natsauth's registry, translating its
// refusals into the edge's ErrRefused (anything else is an outage: the device retries).
type registryVerifier struct{ devices *natsauth.Devices }

// Verify implements coap.Verifier.
func (r registryVerifier) Verify(ctx context.Context, id, secret string) error {
	_, err := r.devices.Verify(ctx, id, secret)
	if errors.Is(err, natsauth.ErrDeviceNotFound) || errors.Is(err, natsauth.ErrBadSecret) ||
		errors.Is(err, natsauth.ErrDeviceRevoked) || errors.Is(err, natsauth.ErrInvalidDeviceID) {
		return fmt.Errorf("%w: %w", coap.ErrRefused, err)
	}
	return err
}
