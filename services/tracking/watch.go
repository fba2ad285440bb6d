package tracking

import (
	"slices"
	"sync"

	"github.com/fleetwire/fleetwire/pkg/geo"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// hub fans live updates out to watchers without ever blocking ingest: each watcher has a
// map of pending updates keyed by vehicle, so a watcher that falls behind receives the
// latest state of each vehicle once, however many updates it missed in between. Its
// memory is bounded by the number of vehicles it watches, and by watchBuffer: a watcher
// with more vehicles pending than that is marked lagged, its pending updates dropped, and
// its stream ends with a "lagged" status telling the client to watch again (the new
// stream's snapshot brings every vehicle's current state, so nothing is lost for good).
type hub struct {
	mu   sync.RWMutex
	subs map[*watcher]struct{}
}

func newHub() *hub { return &hub{subs: make(map[*watcher]struct{})} }

// WatchFilter selects vehicles; empty fields match everything.
type WatchFilter struct {
	IDs    []string
	Groups []string
	Bounds *geo.Rect
	// LoadTest selects the load-test vehicles, which are otherwise left out: a load
	// test watches its own fleet, dispatchers the live one.
	LoadTest bool
}

// Match reports whether v passes the filter.
func (f *WatchFilter) Match(v *Vehicle) bool {
	if telemetry.IsLoadTest(v.Info.ID) != f.LoadTest {
		return false
	}
	if len(f.IDs) > 0 && !slices.Contains(f.IDs, v.Info.ID) {
		return false
	}
	if len(f.Groups) > 0 && !slices.ContainsFunc(f.Groups, v.Info.InGroup) {
		return false
	}
	if f.Bounds != nil {
		if v.State == nil || !v.State.HasFix || !f.Bounds.Contains(v.State.Fix.Point()) {
			return false
		}
	}
	return true
}

// watchBuffer is the most vehicles one watcher may have pending.
const watchBuffer = 10_000

type watcher struct {
	lagged  bool // set once pending outgrew watchBuffer; nothing more is buffered
	filter  WatchFilter
	notify  chan struct{} // capacity 1: "there is something pending"
	mu      sync.Mutex
	pending map[string]Vehicle
	order   []string // first-update order of the pending vehicles
}

func (h *hub) subscribe(f WatchFilter) *watcher {
	w := &watcher{filter: f, notify: make(chan struct{}, 1), pending: make(map[string]Vehicle)}
	h.mu.Lock()
	h.subs[w] = struct{}{}
	h.mu.Unlock()
	return w
}

func (h *hub) unsubscribe(w *watcher) {
	h.mu.Lock()
	delete(h.subs, w)
	h.mu.Unlock()
}

// publish hands v to every matching watcher. The Vehicle's State must not be modified
// afterwards (the service publishes committed states, which it never mutates).
func (h *hub) publish(v Vehicle) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.subs {
		if !w.filter.Match(&v) {
			continue
		}
		w.mu.Lock()
		switch _, ok := w.pending[v.Info.ID]; {
		case w.lagged:
		case !ok && len(w.order) >= watchBuffer:
			w.lagged = true
			w.pending, w.order = nil, nil
		case !ok:
			w.order = append(w.order, v.Info.ID)
			w.pending[v.Info.ID] = v
		default:
			w.pending[v.Info.ID] = v // latest wins
		}
		w.mu.Unlock()
		select {
		case w.notify <- struct{}{}:
		default:
		}
	}
}

// take returns the pending updates, oldest first, and clears them; lagged reports that
// updates were dropped because the reader fell too far behind.
func (w *watcher) take() (_ []Vehicle, lagged bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lagged {
		return nil, true
	}
	out := make([]Vehicle, 0, len(w.order))
	for _, id := range w.order {
		out = append(out, w.pending[id])
	}
	clear(w.pending)
	w.order = w.order[:0]
	return out, false
}
