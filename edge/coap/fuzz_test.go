package coap

import (
	"errors"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"google.golang.org/protobuf/proto"

	"github.com/fleetwire/fleetwire/pkg/wire"
	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// FuzzRequest runs any query string, path kind, content format and payload through the
// decoding a request gets before anything is stored: it never panics, every refusal maps
// to a 4.xx code (never 2.04, never 5.03), and whatever passes decodes on the services'
// side for the authenticated vehicle.
func FuzzRequest(f *testing.F) {
	good, _ := proto.Marshal(&fleetv1.TelemetryBatch{VehicleId: "veh-1", Records: []*fleetv1.TelemetryRecord{{Sequence: 1}}})
	reply, _ := proto.Marshal(&fleetv1.CommandReply{CommandId: "c1"})
	f.Add("id=veh-1", "key=x", "tele", uint16(message.AppOctets), good)
	f.Add("id=veh-1", "key=x", "reply", uint16(message.AppOctets), reply)
	f.Add("id=veh-1", "key=x", "alarm", uint16(message.AppJSON), []byte(`{"records":[{"deviceTime":"2026-01-01T00:00:00Z"}]}`))
	f.Add("id=veh%2E1", "key=", "diag", uint16(message.TextPlain), []byte{0xff})
	f.Fuzz(func(t *testing.T, q1, q2, kind string, cf uint16, body []byte) {
		c, err := parseCredentials([]string{q1, q2})
		if err != nil {
			if got := code(err); got != codes.Unauthorized {
				t.Fatalf("credential error %v maps to %v", err, got)
			}
			return
		}
		json, err := isJSON(message.MediaType(cf), true)
		if err == nil {
			_, _, err = checkUp(c.id, kind, body, json)
		}
		if err != nil {
			if got := code(err); got < codes.BadRequest || got >= codes.InternalServerError {
				t.Fatalf("refusal %v maps to %v", err, got)
			}
			if errors.Is(err, ErrStore) {
				t.Fatalf("decoding reported a store error: %v", err)
			}
			return
		}
		if kind != "reply" {
			recs, _, err := wire.DecodeBatch(c.id, body, json)
			if err != nil {
				t.Fatalf("accepted batch does not decode for %s: %v", c.id, err)
			}
			for _, r := range recs {
				if r.VehicleID != c.id || r.DeviceTime.IsZero() {
					t.Fatalf("record of %q at %v from %s", r.VehicleID, r.DeviceTime, c.id)
				}
			}
		}
	})
}
