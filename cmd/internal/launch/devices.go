package launch

import (
	"context"
	"flag"
	"fmt"

	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/services/devices"
)

// Devices is the provisioning service: fleet.v1.DeviceService over the device registry
// (the FLEET_DEVICES bucket). It consumes no stream and keeps no Redis state. The
// all-in-one hosts it; alone it runs as cmd/devices.
//
// Alone, against a NATS server configured from pkg/natsauth's table, it logs in as the NATS
// user "devices" (--nats-user; docker-compose.yml and the Kubernetes manifest say so): it
// needs write access to the FLEET_DEVICES bucket besides what every service's gRPC
// security reads and writes (tokens, groups, the audit stream).
const Devices = "devices"

// DevicesOptions configure the devices service.
type DevicesOptions struct {
	// NATSURL is where devices connect, handed out with each new credential; empty: the
	// URL this process reaches NATS at (right for the all-in-one, whose trackers share
	// its embedded server).
	NATSURL string
}

func (o *Options) devicesFlags(fs *flag.FlagSet, e *envReader) {
	fs.StringVar(&o.Devices.NATSURL, "device-nats-url", e.str("FLEETWIRE_DEVICE_NATS_URL", ""), "NATS URL handed to devices with their credentials; empty: the URL this process uses (env FLEETWIRE_DEVICE_NATS_URL)")
}

// devicesService adapts the service to the process's shape.
type devicesService struct {
	*devices.Service
	registry *natsauth.Devices
}

// streamless: readiness waits for no consumer of this component.
func (devicesService) streamless() {}

// Run has nothing to do: the registry's mirror runs for the process's lifetime (d.ctx).
func (devicesService) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

func buildDevices(d deps) (service, error) {
	reg, err := natsauth.OpenDevices(d.ctx, d.bus, d.opts.Streams.Replicas, d.log.With("component", "device-registry"))
	if err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	url := d.opts.Devices.NATSURL
	if url == "" {
		url = d.bus.ClientURL()
	}
	s, err := devices.New(devices.Config{DeviceNATSURL: url}, reg, d.log.With("service", Devices), d.registerer(Devices))
	if err != nil {
		return nil, err
	}
	return devicesService{Service: s, registry: reg}, nil
}
