package tracking

import (
	"fmt"
	"testing"

	"github.com/fleetwire/fleetwire/pkg/geo"
)

func TestWatchCoalescesForSlowWatchers(t *testing.T) {
	h := newHub()
	w := h.subscribe(WatchFilter{})
	defer h.unsubscribe(w)
	// The watcher reads nothing while 3 vehicles send 1 000 updates each: publish never
	// blocks, and the watcher then gets one update per vehicle, the latest.
	for i := range 1000 {
		for _, id := range []string{"a", "b", "c"} {
			st := NewState(id)
			st.Records = uint64(i + 1)
			h.publish(Vehicle{Info: Info{ID: id}, State: st})
		}
	}
	got, lagged := w.take()
	if len(got) != 3 || lagged {
		t.Fatalf("got %d pending updates, want 3", len(got))
	}
	for i, v := range got {
		if want := []string{"a", "b", "c"}[i]; v.Info.ID != want || v.State.Records != 1000 {
			t.Errorf("update %d: got %s with %d records, want %s with 1000", i, v.Info.ID, v.State.Records, want)
		}
	}
	if more, _ := w.take(); len(more) != 0 {
		t.Error("updates left after take")
	}
}

// A watcher that reads nothing while more vehicles change than its buffer holds is marked
// lagged and holds nothing more: its memory stops growing with the fleet.
func TestWatchLagsInsteadOfGrowing(t *testing.T) {
	h := newHub()
	w := h.subscribe(WatchFilter{})
	defer h.unsubscribe(w)
	for i := range watchBuffer + 5000 {
		h.publish(Vehicle{Info: Info{ID: fmt.Sprintf("v%06d", i)}, State: NewState("x")})
	}
	w.mu.Lock()
	held := len(w.pending)
	w.mu.Unlock()
	if held != 0 {
		t.Errorf("a lagged watcher holds %d updates, want 0", held)
	}
	if got, lagged := w.take(); !lagged || len(got) != 0 {
		t.Fatalf("take = %d updates, lagged %v; want none and lagged", len(got), lagged)
	}
}

func TestWatchFilter(t *testing.T) {
	at := func(id string, lat, lon float64, groups ...string) Vehicle {
		return Vehicle{Info: Info{ID: id, Groups: groups}, State: stateAt(id, lat, lon, StatusMoving)}
	}
	box := geo.Rect{MinLat: -10, MaxLat: 10, MinLon: 170, MaxLon: -170} // across ±180°
	tests := []struct {
		name string
		f    WatchFilter
		v    Vehicle
		want bool
	}{
		{"empty matches all", WatchFilter{}, at("a", 0, 0), true},
		{"id in list", WatchFilter{IDs: []string{"x", "a"}}, at("a", 0, 0), true},
		{"id not in list", WatchFilter{IDs: []string{"x"}}, at("a", 0, 0), false},
		{"group", WatchFilter{Groups: []string{"red"}}, at("a", 0, 0, "blue", "red"), true},
		{"other group", WatchFilter{Groups: []string{"red"}}, at("a", 0, 0, "blue"), false},
		{"in box across the antimeridian", WatchFilter{Bounds: &box}, at("a", 1, -175), true},
		{"outside box", WatchFilter{Bounds: &box}, at("a", 1, 160), false},
		{"no fix is outside every box", WatchFilter{Bounds: &box}, Vehicle{Info: Info{ID: "a"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Match(&tc.v); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
