package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/bus"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Fleet publishes a simulated fleet to NATS and answers commands.
type Fleet struct {
	cfg      Config
	log      *slog.Logger
	sim      *Sim
	subjects [][2]string // per vehicle: telemetry, alarm

	js        jetstream.JetStream            // Run: the shared connection's
	byVehicle map[string]jetstream.JetStream // RunDevices: each vehicle's own
	observer  func(Packet)

	published, acked, pubErrors, retried, dropped atomic.Uint64
	commands, replies, badCommands, unsent        atomic.Uint64

	retryMu    sync.Mutex
	retryQ     []*nats.Msg
	failing    atomic.Bool
	retryReady chan struct{}
}

// Packet describes one published packet, for observers such as the load tester.
type Packet struct {
	Vehicle           string
	Kind              string // bus kind: tele or alarm
	Records           int
	FirstSeq, LastSeq uint64
	Sent              time.Time // sent_time carried in the packet
	DeviceTime        time.Time // device time of the newest record
	Late              bool      // holds records older than the live ones (coverage backlog)
}

// maxRetryQueue bounds the publishes kept for retry while NATS refuses them (about
// 40 MB of packets); beyond it the oldest are dropped and counted.
const maxRetryQueue = 1 << 18

// New builds the fleet.
func New(cfg Config, log *slog.Logger) (*Fleet, error) {
	sim, err := NewSim(cfg)
	if err != nil {
		return nil, err
	}
	f := &Fleet{cfg: sim.cfg, log: log, sim: sim, retryReady: make(chan struct{}, 1)}
	wall := f.cfg.SendWallTime == nil && f.cfg.Speedup == 1 || f.cfg.SendWallTime != nil && *f.cfg.SendWallTime
	if wall {
		sim.sentClock = func() int64 { return time.Now().UnixNano() }
	}
	f.subjects = make([][2]string, len(sim.vehicles))
	for i, v := range sim.vehicles {
		f.subjects[i] = [2]string{bus.UpSubject(v.id, bus.KindTelemetry), bus.UpSubject(v.id, bus.KindAlarm)}
	}
	return f, nil
}

// SetInterval changes every vehicle's fixed reporting interval (Sim.SetInterval); the
// fleet then publishes len(vehicles)/d records per second.
func (f *Fleet) SetInterval(d time.Duration) error { return f.sim.SetInterval(d) }

// Sim is the generator behind the fleet (ground truth, vehicle ids).
func (f *Fleet) Sim() *Sim { return f.sim }

// Observe registers fn to be called for every packet published. Call before Run; fn
// runs on the publishing goroutine and must be quick.
func (f *Fleet) Observe(fn func(Packet)) { f.observer = fn }

// Stats is a snapshot of what the fleet did.
type Stats struct {
	Vehicles       int
	SimTime        time.Time
	Records        uint64 // records the trackers took
	Batches        uint64 // packets sent, duplicates included
	LateBatches    uint64 // packets of records stored during coverage gaps
	LateRecords    uint64
	Duplicates     uint64 // packets sent twice on purpose (lost acknowledgement)
	BacklogDropped uint64 // records lost because a tracker's storage was full
	Published      uint64 // publish attempts handed to NATS
	Acked          uint64 // publishes JetStream acknowledged
	PublishErrors  uint64 // failed attempts (each is retried)
	Retried        uint64
	Dropped        uint64 // given up: the retry queue was full
	RetryQueue     int
	Unsent         uint64 // packets not sent because the run stopped while they waited
	Commands       uint64 // commands received for this fleet's vehicles
	Replies        uint64
	BadCommands    uint64 // undecodable commands
}

// Stats returns current counters.
func (f *Fleet) Stats() Stats {
	f.sim.mu.Lock()
	c := f.sim.counts
	now := f.sim.at(f.sim.now)
	f.sim.mu.Unlock()
	f.retryMu.Lock()
	q := len(f.retryQ)
	f.retryMu.Unlock()
	return Stats{
		Vehicles: len(f.sim.vehicles), SimTime: now,
		Records: c.records, Batches: c.batches, LateBatches: c.lateBatches, LateRecords: c.lateRecords,
		Duplicates: c.duplicates, BacklogDropped: c.backlogDropped,
		Published: f.published.Load(), Acked: f.acked.Load(), PublishErrors: f.pubErrors.Load(),
		Retried: f.retried.Load(), Dropped: f.dropped.Load(), RetryQueue: q, Unsent: f.unsent.Load(),
		Commands: f.commands.Load(), Replies: f.replies.Load(), BadCommands: f.badCommands.Load(),
	}
}

// Run plays the fleet until ctx ends: it advances the simulated clock every Tick,
// publishes the trackers' packets with JetStream async publish (at most MaxInFlight
// unacknowledged), retries refused publishes with back-off (before the platform has
// created its streams every publish gets "no responders"), and answers commands on
// fleet.down.*.cmd. It returns nil on a clean stop. Run may be called again after it
// returned: the fleet carries on from where it stopped (positions, sequences), its
// simulated clock paused meanwhile. nc speaks for every vehicle: a NATS identity allowed
// to publish for all of them (natsauth's load generator), or an open server; RunDevices
// connects each vehicle as the device it plays instead.
func (f *Fleet) Run(ctx context.Context, nc *nats.Conn) error {
	switch f.cfg.Protocol {
	case ProtocolTeltonika:
		return f.runTeltonika(ctx, f.cfg.TeltonikaAddr)
	case ProtocolMQTT, ProtocolCoAP:
		return f.runDevices(ctx)
	}
	js, err := f.newJS(nc)
	if err != nil {
		return err
	}
	f.js, f.byVehicle = js, nil
	sub, err := nc.Subscribe(bus.CommandWildcard(), func(m *nats.Msg) { f.onCommand(ctx, m) })
	if err != nil {
		return fmt.Errorf("subscribe to commands: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	return f.play(ctx, []jetstream.JetStream{js})
}

// DeviceDialer connects one vehicle to NATS as its device (username = vehicle id,
// password = its secret, replies under its own inbox prefix).
type DeviceDialer func(ctx context.Context, vehicle string) (*nats.Conn, error)

// RunDevices is Run with one NATS connection per vehicle, each logged in as that vehicle's
// device: a platform that confines devices to their own subjects sees a real fleet. Each
// connection publishes only its vehicle's packets and receives only its commands.
func (f *Fleet) RunDevices(ctx context.Context, dial DeviceDialer) error {
	if f.cfg.Protocol == ProtocolTeltonika {
		return f.runTeltonika(ctx, f.cfg.TeltonikaAddr)
	}
	f.byVehicle = make(map[string]jetstream.JetStream, len(f.sim.vehicles))
	all := make([]jetstream.JetStream, 0, len(f.sim.vehicles))
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for _, v := range f.sim.vehicles {
		nc, err := dial(ctx, v.id)
		if err != nil {
			return fmt.Errorf("connect %s as its device: %w", v.id, err)
		}
		conns = append(conns, nc)
		js, err := f.newJS(nc)
		if err != nil {
			return err
		}
		if _, err := nc.Subscribe(bus.CommandSubject(v.id), func(m *nats.Msg) { f.onCommand(ctx, m) }); err != nil {
			return fmt.Errorf("subscribe to %s's commands: %w", v.id, err)
		}
		f.byVehicle[v.id] = js
		all = append(all, js)
	}
	f.log.Info("simulated vehicles connected as devices", "connections", len(conns))
	return f.play(ctx, all)
}

func (f *Fleet) newJS(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(f.cfg.MaxInFlight),
		jetstream.WithPublishAsyncErrHandler(f.onPublishError),
		jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) {
			f.acked.Add(1)
			if f.failing.CompareAndSwap(true, false) {
				f.log.Info("publishing recovered")
			}
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// play runs the generator until ctx ends, then waits (a while) for the publishes out.
func (f *Fleet) play(ctx context.Context, jss []jetstream.JetStream) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.retryLoop(ctx)
	}()

	f.log.Info("fleet simulator running", "vehicles", len(f.sim.vehicles), "seed", f.cfg.Seed,
		"center", fmt.Sprintf("%.4f,%.4f", f.cfg.Center.Lat, f.cfg.Center.Lon), "speedup", f.cfg.Speedup,
		"sim_start", f.sim.Start().UTC().Format(time.RFC3339))
	wallStart := time.Now()
	simStart := f.sim.Now()
	sink := &natsSink{f: f, ctx: ctx}
	tick := time.NewTicker(f.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			deadline := time.After(5 * time.Second)
			for _, js := range jss {
				select {
				case <-js.PublishAsyncComplete():
				case <-deadline:
					f.log.Warn("stopping with unacknowledged publishes", "pending", js.PublishAsyncPending())
					return nil
				}
			}
			return nil
		case now := <-tick.C:
			elapsed := time.Duration(float64(now.Sub(wallStart)) * f.cfg.Speedup)
			f.sim.advance(simStart.Add(elapsed), sink)
		}
	}
}

// jsFor is the JetStream context that publishes on subject: the vehicle's own connection
// in RunDevices, the shared one in Run.
func (f *Fleet) jsFor(subject string) jetstream.JetStream {
	if f.byVehicle == nil {
		return f.js
	}
	if a, err := bus.ParseSubject(subject); err == nil {
		if js, ok := f.byVehicle[a.Vehicle]; ok {
			return js
		}
	}
	return nil
}

// natsSink publishes packets from inside the generator.
type natsSink struct {
	f   *Fleet
	ctx context.Context
}

func (s *natsSink) emit(v *vehicle, kind string, data []byte, recs []sample) {
	f := s.f
	if s.ctx.Err() != nil {
		f.unsent.Add(1) // the run is over: the trackers are switched off
		return
	}
	subj := f.subjects[v.idx][0]
	if kind == kindAlarm {
		subj = f.subjects[v.idx][1]
	}
	// The message is kept by the client until acknowledged (and by the retry queue), so
	// it gets its own copy of the generator's scratch buffer.
	if f.observer != nil {
		// Before publishing: the observer must know the packet before anyone can see it.
		p := Packet{Vehicle: v.id, Kind: kind, Records: len(recs), FirstSeq: recs[0].seq, LastSeq: recs[len(recs)-1].seq,
			DeviceTime: timeFromUnixNano(recs[len(recs)-1].unixNano), Late: f.sim.late}
		if f.sim.sentClock != nil {
			p.Sent = time.Now()
		} else {
			p.Sent = timeFromUnixNano(recs[len(recs)-1].unixNano)
		}
		f.observer(p)
	}
	m := &nats.Msg{Subject: subj, Data: append([]byte(nil), data...)}
	f.publish(s.ctx, m)
}

// publish hands m to JetStream, waiting while too many publishes are unacknowledged.
func (f *Fleet) publish(ctx context.Context, m *nats.Msg) {
	for {
		js := f.jsFor(m.Subject)
		if js == nil {
			f.unsent.Add(1) // not a vehicle of this fleet: nothing may publish for it
			return
		}
		f.published.Add(1)
		_, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Second))
		if err == nil {
			return
		}
		f.published.Add(^uint64(0))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			if ctx.Err() != nil {
				f.unsent.Add(1)
				return
			}
			continue // flow control: the server is behind; wait for acknowledgements
		}
		f.onPublishError(js, m, err)
		return
	}
}

func (f *Fleet) onPublishError(_ jetstream.JetStream, m *nats.Msg, err error) {
	f.pubErrors.Add(1)
	if f.failing.CompareAndSwap(false, true) {
		f.log.Warn("publishing fails; retrying with back-off", "subject", m.Subject, "err", err)
	}
	f.retryMu.Lock()
	if len(f.retryQ) >= maxRetryQueue {
		f.retryQ[0] = nil
		f.retryQ = f.retryQ[1:]
		f.dropped.Add(1)
	}
	f.retryQ = append(f.retryQ, m)
	f.retryMu.Unlock()
	select {
	case f.retryReady <- struct{}{}:
	default:
	}
}

// retryLoop re-publishes refused packets with exponential back-off (250 ms .. 5 s).
func (f *Fleet) retryLoop(ctx context.Context) {
	backoff := 250 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.retryReady:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		f.retryMu.Lock()
		q := f.retryQ
		f.retryQ = nil
		f.retryMu.Unlock()
		before := f.pubErrors.Load()
		for _, m := range q {
			f.retried.Add(1)
			f.publish(ctx, m)
		}
		if f.pubErrors.Load() > before || f.failing.Load() {
			backoff = min(2*backoff, 5*time.Second)
		} else {
			backoff = 250 * time.Millisecond
		}
	}
}

// onCommand answers a DeviceCommand for one of the fleet's vehicles.
func (f *Fleet) onCommand(ctx context.Context, m *nats.Msg) {
	replies, err := f.handleCommand(m.Subject, m.Data, &natsSink{f: f, ctx: ctx})
	if err != nil {
		f.badCommands.Add(1)
		f.log.Warn("undecodable command", "subject", m.Subject, "err", err)
		return
	}
	if replies == nil {
		return // another simulator's vehicle
	}
	f.commands.Add(1)
	for _, r := range replies {
		data, err := proto.Marshal(r)
		if err != nil {
			f.log.Error("encode command reply", "err", err)
			continue
		}
		f.publish(ctx, &nats.Msg{Subject: bus.UpSubject(r.GetVehicleId(), bus.KindReply), Data: data})
		f.replies.Add(1)
	}
}

// errBadCommand wraps undecodable command payloads.
var errBadCommand = errors.New("undecodable command")

// handleCommand decodes and executes a command received on subject. It returns the
// replies to send, or nil when the vehicle is not part of this fleet.
func (f *Fleet) handleCommand(subject string, data []byte, out emitter) ([]*fleetv1.CommandReply, error) {
	var pc fleetv1.DeviceCommand
	if err := proto.Unmarshal(data, &pc); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	cmd := Command{ID: pc.GetCommandId(), Vehicle: pc.GetVehicleId(), Kind: CommandKind(pc.GetKind()), Params: pc.GetParams()}
	if pc.GetExpireTime() != nil {
		cmd.Expire = pc.GetExpireTime().AsTime()
	}
	if pc.MaxSpeedKmh != nil {
		cmd.MaxSpeedKmh, cmd.HasMaxSpeed = pc.GetMaxSpeedKmh(), true
	}
	// The subject names the vehicle (fleet.down.<vehicle>.cmd); a body naming another
	// vehicle is answered for the subject's one, which is the device that received it.
	const pre, suf = "fleet.down.", ".cmd"
	if strings.HasPrefix(subject, pre) && strings.HasSuffix(subject, suf) && len(subject) > len(pre)+len(suf) {
		cmd.Vehicle = subject[len(pre) : len(subject)-len(suf)]
	}
	replies, ok := f.sim.command(cmd, out)
	if !ok {
		return nil, nil
	}
	now := timestamppb.New(f.sim.Now())
	out2 := make([]*fleetv1.CommandReply, len(replies))
	for i, r := range replies {
		out2[i] = &fleetv1.CommandReply{
			CommandId: cmd.ID, VehicleId: cmd.Vehicle, Status: fleetv1.CommandReplyStatus(r.Status),
			Detail: r.Detail, DeviceTime: now,
		}
		if r.HasSpeed {
			sp := r.SpeedKmh
			out2[i].SpeedKmh = &sp
		}
	}
	return out2, nil
}
