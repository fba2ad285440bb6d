package dispatch

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// TestAlertPolicy: plain zone events are events, not alerts; a zone's policy and the
// per-kind rules decide; repeats of one incident are one alert with a count.
func TestAlertPolicy(t *testing.T) { forStores(t, testAlertPolicy) }

func testAlertPolicy(t *testing.T, st Store) {
	cfg := testConfig()
	cfg.Rules = AlertRules{Kinds: map[string]AlertRule{
		"geofence_dwell": {Raise: RaiseAlways}, // every dwell, whatever the zone says
		KindOffline:      {Raise: RaiseNever},  // this fleet parks overnight with trackers off
	}}
	h := newHarnessWith(t, st, cfg)
	zone := func(id, kind, vehicle, zone string, extra ...string) {
		attrs := map[string]string{"zone_id": zone, "zone_name": strings.ToUpper(zone)}
		for i := 0; i+1 < len(extra); i += 2 {
			attrs[extra[i]] = extra[i+1]
		}
		publishEvent(t, h.b, "geofence", kind, vehicle, id, attrs)
	}
	// A zone with the default policy: enter, exit and crossed are only events.
	zone("d1", "enter", "p-1", "depot", "alert", "false")
	zone("d2", "exit", "p-1", "depot", "alert", "false")
	zone("d3", "crossed", "p-1", "depot", "alert", "false")
	zone("d4", "enter", "p-1", "depot") // from a geofence without policies: the same default
	// What the zone asks for: overspeed, a must-stay-inside exit, and enters of a zone
	// that wants them (three visits: one alert counting three).
	zone("a1", "overspeed_in_zone", "p-1", "school", "alert", "true")
	zone("a2", "exit", "p-1", "yard", "alert", "true", "must_stay_inside", "true")
	for _, id := range []string{"a3", "a4", "a5"} {
		zone(id, "enter", "p-2", "customs", "alert", "true")
	}
	// The rules: dwell always, offline never.
	zone("r1", "dwell", "p-3", "lot", "alert", "false")
	publishEvent(t, h.b, "tracking", "status_changed", "p-3", "r2", map[string]string{"status": "offline", "previous": "stopped"})
	// A marker last: once its alert is there, every event before it was handled.
	zone("z", "exit", "p-9", "marker", "alert", "true")
	eventually(t, "the marker's alert", func() bool {
		return len(h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "p-9"})) == 1
	})
	got := map[string]*fleetv1.Alert{}
	resp, err := h.alerts.ListAlerts(h.ctx(), &fleetv1.ListAlertsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range resp.GetAlerts() {
		if a.GetVehicleId() == "p-9" {
			continue
		}
		got[a.GetKind()+"/"+a.GetVehicleId()] = a
	}
	want := map[string]uint32{
		"overspeed_in_zone/p-1": 1,
		"zone_exit/p-1":         1,
		"geofence_enter/p-2":    3,
		"geofence_dwell/p-3":    1,
	}
	if len(got) != len(want) {
		t.Errorf("alerts: got %d %v, want %v", len(got), keys(got), want)
	}
	for k, n := range want {
		a, ok := got[k]
		if !ok {
			t.Errorf("no %s alert", k)
			continue
		}
		if a.GetOccurrences() != n {
			t.Errorf("%s: got %d occurrences, want %d", k, a.GetOccurrences(), n)
		}
	}
	if resp.GetTotalSize() != int64(len(want)+1) {
		t.Errorf("total_size: got %d, want %d", resp.GetTotalSize(), len(want)+1)
	}
}

func keys(m map[string]*fleetv1.Alert) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestResolvedAlertsExpire: resolved alerts are removed after the retention time; open
// ones stay, and a later occurrence of a removed alert's incident raises a new one.
func TestResolvedAlertsExpire(t *testing.T) { forStores(t, testResolvedAlertsExpire) }

func testResolvedAlertsExpire(t *testing.T, st Store) {
	cfg := testConfig()
	cfg.AlertRetention = 300 * time.Millisecond
	cfg.HousekeepEvery = 50 * time.Millisecond
	h := newHarnessWith(t, st, cfg)
	over := func(id, vehicle string) {
		publishEvent(t, h.b, "geofence", "overspeed_in_zone", vehicle, id, map[string]string{"zone_id": "school", "alert": "true"})
	}
	over("o1", "ret-1")
	over("o2", "ret-2")
	eventually(t, "two alerts", func() bool { return len(h.listAlerts(&fleetv1.ListAlertsRequest{})) == 2 })
	first := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "ret-1"})[0]
	if _, err := h.alerts.ResolveAlert(h.ctx(), &fleetv1.ResolveAlertRequest{AlertId: first.GetAlertId(), Who: "ann"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the resolved alert removed", func() bool {
		return len(h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "ret-1"})) == 0
	})
	if _, err := h.alerts.AcknowledgeAlert(h.ctx(), &fleetv1.AcknowledgeAlertRequest{AlertId: first.GetAlertId(), Who: "ann"}); err == nil {
		t.Error("acknowledging a removed alert succeeded")
	}
	time.Sleep(2 * cfg.AlertRetention) // several housekeeping rounds
	if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "ret-2"}); len(got) != 1 {
		t.Fatalf("open alert after the retention: got %d, want 1 (open alerts are never removed)", len(got))
	}
	over("o3", "ret-1")
	eventually(t, "a new alert for the removed incident", func() bool {
		l := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "ret-1"})
		return len(l) == 1 && l[0].GetAlertId() > first.GetAlertId()
	})
}

// TestWebhookDelivery: a new alert whose rule names a sink is POSTed to a real local
// HTTP server, signed; a 500 is retried after the back-off; the delivery's state is
// visible on the alert.
func TestWebhookDelivery(t *testing.T) { forStores(t, testWebhookDelivery) }

func testWebhookDelivery(t *testing.T, st Store) {
	secret := []byte("a-secret-of-enough-bytes")
	var (
		mu       sync.Mutex
		attempts []string // delivery id and attempt of every request
		bodies   [][]byte
		badSig   int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if !VerifySignature(secret, body, r.Header.Get(HeaderSignature)) {
			badSig++
		}
		attempts = append(attempts, r.Header.Get(HeaderDelivery)+"#"+r.Header.Get(HeaderAttempt))
		bodies = append(bodies, body)
		if len(attempts) == 1 {
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.Rules = AlertRules{
		Kinds: map[string]AlertRule{KindZoneExit: {Webhooks: []string{"ops"}}},
		Sinks: map[string]Sink{"ops": {URL: srv.URL, Secret: secret, Backoff: 100 * time.Millisecond}},
	}
	h := newHarnessWith(t, st, cfg)
	publishEvent(t, h.b, "geofence", "exit", "wh-1", "x1", map[string]string{"zone_id": "yard", "must_stay_inside": "true"})
	// An alert of a kind without sinks is not delivered.
	publishEvent(t, h.b, "geofence", "overspeed_in_zone", "wh-1", "x2", map[string]string{"zone_id": "yard"})
	var a *fleetv1.Alert
	eventually(t, "the delivery marked delivered", func() bool {
		l := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "wh-1", Kind: KindZoneExit})
		if len(l) != 1 || len(l[0].GetDeliveries()) != 1 {
			return false
		}
		a = l[0]
		return a.GetDeliveries()[0].GetState() == fleetv1.AlertDeliveryState_ALERT_DELIVERY_STATE_DELIVERED
	})
	d := a.GetDeliveries()[0]
	if d.GetSink() != "ops" || d.GetAttempts() != 2 || d.GetLastStatusCode() != http.StatusNoContent || d.GetDeliveredTime() == nil || d.GetLastError() != "" {
		t.Fatalf("delivery: got %v, want ops delivered on attempt 2 with 204", d)
	}
	mu.Lock()
	defer mu.Unlock()
	id := a.GetAlertId()
	want := []string{strconv.FormatUint(id, 10) + ":ops#1", strconv.FormatUint(id, 10) + ":ops#2"}
	if strings.Join(attempts, ",") != strings.Join(want, ",") {
		t.Fatalf("requests: got %v, want %v (a retry after the 500, nothing for the alert without sinks)", attempts, want)
	}
	if badSig != 0 {
		t.Fatalf("%d requests failed signature verification", badSig)
	}
	var sent fleetv1.Alert
	if err := protojson.Unmarshal(bodies[1], &sent); err != nil || sent.GetAlertId() != id || sent.GetKind() != KindZoneExit {
		t.Fatalf("body: got %s (%v), want alert %d", bodies[1], err, id)
	}
	// A tampered body or another secret fails verification.
	if VerifySignature(secret, append([]byte(" "), bodies[1]...), Sign(secret, bodies[1])) || VerifySignature([]byte("other"), bodies[1], Sign(secret, bodies[1])) {
		t.Fatal("signature verified a tampered body or a wrong secret")
	}
}

// TestWebhookGivesUp: a sink that keeps failing gets MaxAttempts attempts, then the
// delivery is failed with the last error.
func TestWebhookGivesUp(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.Rules = AlertRules{
		Kinds: map[string]AlertRule{"*": {Webhooks: []string{"flaky"}}},
		Sinks: map[string]Sink{"flaky": {URL: srv.URL, Secret: []byte("0123456789abcdef"), MaxAttempts: 3, Backoff: 50 * time.Millisecond}},
	}
	h := newHarnessWith(t, NewMemoryStore(), cfg)
	publishEvent(t, h.b, "geofence", "overspeed_in_zone", "gu-1", "g1", map[string]string{"zone_id": "z"})
	eventually(t, "the delivery failed", func() bool {
		l := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "gu-1"})
		return len(l) == 1 && len(l[0].GetDeliveries()) == 1 &&
			l[0].GetDeliveries()[0].GetState() == fleetv1.AlertDeliveryState_ALERT_DELIVERY_STATE_FAILED
	})
	d := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "gu-1"})[0].GetDeliveries()[0]
	if d.GetAttempts() != 3 || d.GetLastStatusCode() != http.StatusServiceUnavailable || !strings.Contains(d.GetLastError(), "503") {
		t.Fatalf("failed delivery: got %v, want 3 attempts ending in 503", d)
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if n != 3 {
		t.Fatalf("requests: got %d, want 3 (no attempt after giving up)", n)
	}
}

func TestParseAlertRules(t *testing.T) {
	secrets := SecretSource{
		Getenv: func(k string) (string, bool) {
			if k == "OPS_SECRET" {
				return "0123456789abcdef0123", true
			}
			return "", false
		},
	}
	r, err := ParseAlertRules([]byte(`{
		"rules": {"geofence_enter": {"raise": "always"}, "offline": {"raise": "never"}, "tow": {"webhooks": ["ops"]}},
		"webhooks": {"ops": {"url": "https://ops.example/hook", "secret_env": "OPS_SECRET", "max_attempts": 4, "backoff_s": 2}}}`), secrets)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kinds["geofence_enter"].Raise != RaiseAlways || r.Kinds["offline"].Raise != RaiseNever ||
		len(r.Kinds["tow"].Webhooks) != 1 || r.Sinks["ops"].MaxAttempts != 4 || r.Sinks["ops"].Backoff != 2*time.Second ||
		r.Sinks["ops"].Timeout != DefaultSinkTimeout || string(r.Sinks["ops"].Secret) != "0123456789abcdef0123" {
		t.Fatalf("parsed %+v", r)
	}
	for name, bad := range map[string]string{
		"unknown key":        `{"rulez": {}}`,
		"unknown raise":      `{"rules": {"tow": {"raise": "sometimes"}}}`,
		"undefined sink":     `{"rules": {"tow": {"webhooks": ["nope"]}}}`,
		"plain http":         `{"webhooks": {"ops": {"url": "http://ops.example/hook", "secret_env": "OPS_SECRET"}}}`,
		"no secret":          `{"webhooks": {"ops": {"url": "https://ops.example/hook"}}}`,
		"short secret":       `{"webhooks": {"ops": {"url": "https://ops.example/hook", "secret_env": "NONE"}}}`,
		"negative attempts":  `{"webhooks": {"ops": {"url": "https://ops.example/hook", "secret_env": "OPS_SECRET", "max_attempts": -1}}}`,
		"not json":           `{`,
		"url without a host": `{"webhooks": {"ops": {"url": "https:///hook", "secret_env": "OPS_SECRET"}}}`,
	} {
		if _, err := ParseAlertRules([]byte(bad), secrets); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

// TestLoadTestVehiclesRaiseNothing: a load-test vehicle's alarms and events raise no
// alert (offline included), and it takes no commands.
func TestLoadTestVehiclesRaiseNothing(t *testing.T) {
	h := newHarness(t, NewMemoryStore())
	const v = telemetry.LoadTestPrefix + "a-00001"
	dev := newDevice(t, h.b, v)
	now := time.Now().UTC()
	r := at(now, 0, 0, 0, true)
	r.Alarms = []telemetry.AlarmKind{telemetry.AlarmPanic}
	dev.send(r)
	publishEvent(t, h.b, "tracking", "status_changed", v, "lt1", map[string]string{"status": "offline", "previous": "moving"})
	publishEvent(t, h.b, "geofence", "overspeed_in_zone", v, "lt2", map[string]string{"zone_id": "z", "alert": "true"})
	// The same from a live vehicle, last: once its alerts are there, the others were handled.
	live := newDevice(t, h.b, "live-1")
	live.send(r)
	publishEvent(t, h.b, "tracking", "status_changed", "live-1", "l1", map[string]string{"status": "offline", "previous": "moving"})
	eventually(t, "the live vehicle's alerts", func() bool { return len(h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: "live-1"})) == 2 })
	if got := h.listAlerts(&fleetv1.ListAlertsRequest{VehicleId: v}); len(got) != 0 {
		t.Fatalf("load-test vehicle alerts: got %v, want none", got)
	}
	_, err := h.cmds.SendCommand(h.ctx(), &fleetv1.SendCommandRequest{VehicleId: v, Kind: fleetv1.CommandKind_COMMAND_KIND_LOCATE_NOW, Who: "ann"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("command to a load-test vehicle: got %v, want NotFound", err)
	}
}
