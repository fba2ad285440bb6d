// Package status serves fleet.v1.StatusService: per consumer of the process, how far
// behind its stream it is, and per service, whether its store is intact (fleetctl status).
package status

import (
	"context"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Store describes one service's store.
type Store struct {
	Service string
	Backend string      // "memory" or "redis"
	OK      func() bool // nil: always intact (memory)
	Epoch   string
	Rebuilt bool
}

// Server answers GetStatus from the process's bus and stores.
type Server struct {
	fleetv1.UnimplementedStatusServiceServer
	Bus      *bus.Bus
	Services []string
	Stores   []Store
	Ready    func() (bool, string)
	Bound    int64 // catch-up bound
}

var _ fleetv1.StatusServiceServer = (*Server)(nil)

// GetStatus implements fleetv1.StatusServiceServer. A consumer whose server-side
// information cannot be read (NATS unreachable) is reported with what the process knows.
func (s *Server) GetStatus(ctx context.Context, _ *fleetv1.GetStatusRequest) (*fleetv1.GetStatusResponse, error) {
	resp := &fleetv1.GetStatusResponse{Services: s.Services, CatchUpBound: s.Bound}
	if s.Ready != nil {
		resp.Ready, resp.ReadyDetail = s.Ready()
	}
	lags := s.Bus.Lag()
	durables := make([]string, 0, len(lags))
	for d := range lags {
		durables = append(durables, d)
	}
	slices.Sort(durables)
	// One listing per stream, not a lookup per consumer: a process has dozens.
	type found struct {
		stream string
		info   *jetstream.ConsumerInfo
	}
	infos := map[string]found{}
	for _, stream := range []string{bus.TelemetryStream, bus.EventStream} {
		st, err := s.Bus.Stream(ctx, stream)
		if err != nil {
			continue
		}
		l := st.ListConsumers(ctx)
		for ci := range l.Info() {
			if _, ok := lags[ci.Name]; ok {
				infos[ci.Name] = found{stream, ci}
			}
		}
	}
	for _, d := range durables {
		c := &fleetv1.ConsumerStatus{Durable: d, Service: serviceOf(d), AppliedLag: lags[d]}
		c.CaughtUp = c.AppliedLag >= 0 && c.AppliedLag <= s.Bound
		if f, ok := infos[d]; ok {
			c.Stream = f.stream
			c.Pending, c.AckPending = f.info.NumPending, uint64(f.info.NumAckPending)
			c.AckFloor = f.info.AckFloor.Stream
			c.AckFloorLag = c.Pending + c.AckPending
		}
		resp.Consumers = append(resp.Consumers, c)
	}
	for _, st := range s.Stores {
		ok := st.OK == nil || st.OK()
		resp.Stores = append(resp.Stores, &fleetv1.StoreStatus{
			Service: st.Service, Backend: st.Backend, EpochOk: ok, Epoch: st.Epoch, Rebuilt: st.Rebuilt,
		})
	}
	return resp, nil
}

// serviceOf is the service a durable belongs to: its name up to the last '-'.
func serviceOf(durable string) string {
	if i := strings.LastIndexByte(durable, '-'); i > 0 {
		return durable[:i]
	}
	return durable
}
