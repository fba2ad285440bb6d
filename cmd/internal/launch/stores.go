package launch

import (
	"context"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/status"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
	"github.com/fleetwire/fleetwire/services/dispatch"
	"github.com/fleetwire/fleetwire/services/geofence"
	"github.com/fleetwire/fleetwire/services/maintenance"
	"github.com/fleetwire/fleetwire/services/tracking"
)

// storeNamespaces gives each Redis-backed service's key namespace (its store's KeyPrefix).
var storeNamespaces = map[string]func(c *redis.Client, prefix string) string{
	Tracking:    func(c *redis.Client, p string) string { return tracking.NewRedisStore(c, p).KeyPrefix() },
	Geofence:    func(c *redis.Client, p string) string { return geofence.NewRedisStore(c, p).KeyPrefix() },
	Maintenance: func(c *redis.Client, p string) string { return maintenance.NewRedisStore(c, p).KeyPrefix() },
	Dispatch:    func(c *redis.Client, p string) string { return dispatch.NewRedisStore(c, p).KeyPrefix() },
}

// prepareStores checks every Redis store of the process against its consumers' records
// before the services start (pkg/storeguard) and returns the services that must rebuild
// from the stream, and the guards that watch the stores while the process runs. With
// in-memory stores there is nothing to check: they rebuild at every start.
//
// sharedBy names the services whose partitions the shared consumers read (all-in-one):
// their progress is that of the shared-pNN durables.
func prepareStores(ctx context.Context, d deps, services []string, partitions int, sharedBy []string) (map[string]bool, []*storeguard.Guard, error) {
	if d.memory() {
		return nil, nil, nil
	}
	m, err := storeguard.NewMetrics(d.reg)
	if err != nil {
		return nil, nil, err
	}
	rebuild := map[string]bool{}
	var guards []*storeguard.Guard
	for _, name := range services {
		ns, ok := storeNamespaces[name]
		if !ok {
			continue
		}
		durables := make([]storeguard.Durable, 0, len(d.parts)+1)
		for _, p := range d.parts {
			du := storeguard.Durable{Stream: bus.TelemetryStream, Name: fmt.Sprintf("%s-p%02d", name, p)}
			if slices.Contains(sharedBy, name) {
				du.Consumer = fmt.Sprintf("%s-p%02d", bus.SharedDurable, p)
			}
			durables = append(durables, du)
		}
		if name == Dispatch {
			durables = append(durables, storeguard.Durable{Stream: bus.EventStream, Name: "dispatch-events"})
		}
		g := storeguard.New(storeguard.Config{
			Service: name, Namespace: ns(d.redis, d.prefix), Durables: durables,
			AllPartitions: len(d.parts) == partitions && !d.bus.Leasing(),
			Replicas:      d.opts.Streams.Replicas,
		}, d.redis, d.bus, m, d.log.With("component", "storeguard"))
		rb, err := g.Prepare(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("%s store: %w", name, err)
		}
		rebuild[name] = rb
		guards = append(guards, g)
	}
	return rebuild, guards, nil
}

// storeStatus describes the stores of services for the status service.
func storeStatus(d deps, services []string, guards []*storeguard.Guard) []status.Store {
	var out []status.Store
	for _, name := range services {
		if _, ok := storeNamespaces[name]; !ok {
			continue // no store (the Teltonika gateway)
		}
		st := status.Store{Service: name, Backend: "memory", Rebuilt: d.rebuilds(name)}
		for _, g := range guards {
			if g.Service() == name {
				st.Backend, st.OK, st.Epoch = "redis", g.OK, g.Epoch()
			}
		}
		out = append(out, st)
	}
	return out
}
