package loadtest

import (
	"sync"
	"time"

	"github.com/fleetwire/fleetwire/simulators/fleetsim"
)

// ledger remembers what was published per vehicle and what the dispatcher has seen, so
// it can tell how many records are still on their way (backlog) or never arrived
// (missing). Sequences of one simulated vehicle increase by one per record.
type ledger struct {
	mu        sync.Mutex
	vehicles  map[string]*vehicleLedger
	start     time.Time
	series    []second
	lat       hist // dispatcher latency over the whole step
	evLat     hist // event latency
	zoneLat   hist // zone event latency (WatchZoneEvents)
	events    map[string]uint64
	zones     map[string]uint64 // zone events by kind, from WatchZoneEvents
	zoneSeen  uint64            // of which matched to a published record (latency known)
	updates   uint64
	delivered uint64
}

type vehicleLedger struct {
	pub     []pubEntry // published packets not yet known to be delivered, plus a tail for event look-ups
	seenSeq uint64
	seenDev int64
	seen    bool
	lastSeq uint64 // newest published
	total   uint64 // records published
}

type pubEntry struct {
	firstSeq, lastSeq uint64
	dev, sent         int64 // unix nanos of the newest record's device time, and of the send
	records           uint32
}

// second is one second of a step's timeline.
type second struct {
	published, delivered, updates uint64
	lat                           hist
}

// eventTail is how many delivered packets per vehicle stay remembered for matching
// events (which quote the device time of the record that caused them).
const eventTail = 32

func newLedger(start time.Time) *ledger {
	return &ledger{vehicles: map[string]*vehicleLedger{}, start: start, events: map[string]uint64{}, zones: map[string]uint64{}}
}

func (l *ledger) sec(now time.Time) *second {
	i := int(now.Sub(l.start) / time.Second)
	if i < 0 {
		i = 0
	}
	for len(l.series) <= i {
		l.series = append(l.series, second{})
	}
	return &l.series[i]
}

// published records a packet the fleet sent.
func (l *ledger) published(p fleetsim.Packet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.vehicles[p.Vehicle]
	if v == nil {
		v = &vehicleLedger{}
		l.vehicles[p.Vehicle] = v
	}
	v.pub = append(v.pub, pubEntry{firstSeq: p.FirstSeq, lastSeq: p.LastSeq, dev: p.DeviceTime.UnixNano(), sent: p.Sent.UnixNano(), records: uint32(p.Records)})
	v.lastSeq = max(v.lastSeq, p.LastSeq)
	v.total += uint64(p.Records)
	l.sec(p.Sent).published += uint64(p.Records)
}

// observe records a dispatcher update: the vehicle's newest record has sequence seq
// (0 when the dispatcher does not report sequences) and device time dev, and was sent at
// sent. It returns false for a vehicle this ledger did not publish.
func (l *ledger) observe(vehicle string, seq uint64, dev, sent time.Time, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.vehicles[vehicle]
	if v == nil {
		return false
	}
	devN := dev.UnixNano()
	advanced := !v.seen || seq > v.seenSeq || seq == 0 && devN > v.seenDev
	if !advanced {
		return true
	}
	if sent.IsZero() && seq == 0 {
		// A protocol without a send time in its records (Teltonika): the latency runs
		// from when the simulated device sent the record the update carries.
		for i := len(v.pub) - 1; i >= 0; i-- {
			if v.pub[i].dev == devN {
				sent = time.Unix(0, v.pub[i].sent)
				break
			}
		}
	}
	newly := v.deliveredUpTo(seq, devN)
	v.seen = true
	if seq > v.seenSeq {
		v.seenSeq = seq
	}
	if devN > v.seenDev {
		v.seenDev = devN
	}
	s := l.sec(now)
	s.delivered += newly
	s.updates++
	l.delivered += newly
	l.updates++
	if !sent.IsZero() {
		d := now.Sub(sent)
		s.lat.add(d)
		l.lat.add(d)
	}
	return true
}

// deliveredUpTo counts the records newly covered by (seq, dev) and forgets the packets
// that are fully delivered, keeping a short tail for events.
func (v *vehicleLedger) deliveredUpTo(seq uint64, dev int64) uint64 {
	var n uint64
	done := 0
	for i := range v.pub {
		e := &v.pub[i]
		covered := seq != 0 && e.lastSeq <= seq || seq == 0 && e.dev <= dev
		partial := seq != 0 && !covered && e.firstSeq <= seq
		if !covered && !partial {
			break
		}
		if e.records == 0 {
			done = i + 1
			continue // counted before (kept for events)
		}
		if partial {
			k := seq - e.firstSeq + 1
			n += k
			e.firstSeq = seq + 1
			e.records -= uint32(k)
			break
		}
		n += uint64(e.records)
		e.records = 0
		done = i + 1
	}
	if done > eventTail {
		cut := done - eventTail
		v.pub = append(v.pub[:0], v.pub[cut:]...)
	}
	return n
}

// pending counts records published but not yet seen, over all vehicles.
func (l *ledger) pending() (records uint64, vehicles int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.vehicles {
		var n uint64
		for i := range v.pub {
			n += uint64(v.pub[i].records)
		}
		if n > 0 {
			records += n
			vehicles++
		}
	}
	return records, vehicles
}

// event records an event about vehicle caused by the record with device time dev.
func (l *ledger) event(kind, vehicle string, dev time.Time, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.vehicles[vehicle]
	if v == nil {
		return false
	}
	l.events[kind]++
	devN := dev.UnixNano()
	for i := len(v.pub) - 1; i >= 0; i-- {
		if v.pub[i].dev == devN {
			l.evLat.add(now.Sub(time.Unix(0, v.pub[i].sent)))
			break
		}
	}
	return true
}

// zoneEvent records a WatchZoneEvents event about vehicle caused by the record with
// device time dev.
func (l *ledger) zoneEvent(kind, vehicle string, dev time.Time, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := l.vehicles[vehicle]
	if v == nil {
		return false
	}
	l.zones[kind]++
	devN := dev.UnixNano()
	for i := len(v.pub) - 1; i >= 0; i-- {
		if v.pub[i].dev == devN {
			l.zoneLat.add(now.Sub(time.Unix(0, v.pub[i].sent)))
			l.zoneSeen++
			break
		}
	}
	return true
}

func (l *ledger) publishedTotal() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n uint64
	for _, v := range l.vehicles {
		n += v.total
	}
	return n
}
