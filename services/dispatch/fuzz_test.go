package dispatch

import (
	"math"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleetwire/fleetwire/pkg/telemetry"
	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// FuzzDecodeReply: any bytes on a reply subject decode or fail cleanly, and a decoded
// reply always names a command and a reply status.
func FuzzDecodeReply(f *testing.F) {
	good, _ := proto.Marshal(&fleetv1.CommandReply{CommandId: "c1", VehicleId: "v1", Status: fleetv1.CommandReplyStatus_COMMAND_REPLY_STATUS_EXECUTED})
	f.Add(good, false)
	f.Add([]byte(`{"commandId":"c1","status":"COMMAND_REPLY_STATUS_ACCEPTED"}`), true)
	f.Add([]byte{0xff, 0x01}, false)
	f.Fuzz(func(t *testing.T, data []byte, isJSON bool) {
		r, err := DecodeReply("v1", data, isJSON)
		if err != nil {
			return
		}
		if r.CommandID == "" || r.Vehicle != "v1" || (r.Status != CommandAccepted && r.Status != CommandRejected && r.Status != CommandExecuted) {
			t.Fatalf("decoded an unusable reply: %+v", r)
		}
	})
}

// FuzzDecodeEvent: any bytes on the event stream decode or fail cleanly, and whatever
// decodes maps to the feed without panicking.
func FuzzDecodeEvent(f *testing.F) {
	good, _ := proto.Marshal(&fleetv1.Event{EventId: "e1", Source: "geofence", Kind: "exit", VehicleId: "v1",
		Time: timestamppb.Now(), Position: &fleetv1.LatLng{Latitude: 52, Longitude: 13},
		Attributes: map[string]string{"zone_id": "z", "must_stay_inside": "true"}})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff})
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEvent(data, "seq-1", now)
		if err != nil {
			return
		}
		if telemetry.ValidVehicleID(e.Vehicle) != nil || e.ID == "" {
			t.Fatalf("decoded an event with a bad vehicle or no id: %+v", e)
		}
		if e.HasPosition && (math.IsNaN(e.Lat) || math.Abs(e.Lat) > 90 || math.Abs(e.Lon) > 180) {
			t.Fatalf("decoded an unusable position: %+v", e)
		}
		a, act := AlertFromEvent(&e)
		if act == EventRaise && (a.IncidentKey == "" || a.Kind == "" || a.Vehicle != e.Vehicle) {
			t.Fatalf("raised an alert without key, kind or vehicle: %+v", a)
		}
	})
}

// FuzzDetector: any decodable telemetry fed to the detector never panics, and every
// alarm on a record is raised.
func FuzzDetector(f *testing.F) {
	seed, _ := wire.EncodeBatch("v1", time.Now(), []telemetry.Record{
		{VehicleID: "v1", DeviceTime: time.Now(), Lat: math.NaN(), Alarms: []telemetry.AlarmKind{telemetry.AlarmTow}},
	})
	f.Add(seed)
	d, err := NewDetector(DefaultConfig().Detect)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, _, err := wire.DecodeBatch("v1", data, false)
		if err != nil {
			return
		}
		var st VehicleState
		for i := range recs {
			alerts := d.Apply(&st, &recs[i])
			want := map[string]bool{}
			for _, k := range recs[i].Alarms {
				want[k.String()] = true
			}
			for _, a := range alerts {
				delete(want, a.Kind)
			}
			if len(want) > 0 {
				t.Fatalf("record %d: alarms %v not raised", i, want)
			}
		}
	})
}

// FuzzParseSchedules: any schedule file parses or fails cleanly, and what parses is usable.
func FuzzParseSchedules(f *testing.F) {
	f.Add([]byte(`{"groups":{"van-1":"day"},"schedules":{"day":{"time_zone":"Europe/Berlin","windows":[{"days":["mon","fri"],"start":"07:00","end":"19:00"}]}}}`))
	f.Add([]byte(`{"schedules":{"night":{"windows":[{"start":"22:00","end":"06:00"}]}}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sched, groups, err := ParseSchedules(data)
		if err != nil {
			return
		}
		cfg := DefaultConfig().Detect
		cfg.Schedules, cfg.Groups = sched, groups
		d, err := NewDetector(cfg)
		if err != nil {
			t.Fatalf("parsed schedules do not compile: %v", err)
		}
		for v := range groups {
			if d.schedule(v) == nil {
				t.Fatalf("vehicle %q has a group but no schedule", v)
			}
			d.schedule(v).allowed(time.Unix(1_800_000_000, 0))
		}
	})
}
