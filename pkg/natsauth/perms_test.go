package natsauth_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
)

// What each identity may and may not do, checked against a real server configured from
// the table: a publish or subscription the server refuses comes back as a permissions
// violation before the flush's PONG.
func TestPermissionTable(t *testing.T) {
	s := startSecure(t)
	type rule struct {
		pubOK, pubDenied []string
		subOK, subDenied []string
	}
	protected := []string{
		"$JS.API.STREAM.DELETE." + bus.TelemetryStream, "$JS.API.STREAM.PURGE." + bus.TelemetryStream,
		"$JS.API.STREAM.DELETE." + bus.EventStream, "$JS.API.STREAM.PURGE." + bus.EventStream,
		"$JS.API.STREAM.DELETE.FLEET_AUDIT", "$JS.API.STREAM.MSG.DELETE.FLEET_AUDIT",
		"$JS.API.STREAM.DELETE.KV_FLEET_TOKENS", "$JS.API.STREAM.PURGE.KV_FLEET_DEVICES",
		"$JS.API.STREAM.DELETE.KV_FLEET_ZONES", "$JS.API.STREAM.DELETE.KV_FLEET_VEHICLE_GROUPS",
		"$JS.API.STREAM.DELETE.FLEET_DEADLETTER",
		"$JS.API.CONSUMER.DELETE." + bus.TelemetryStream + ".tracking-p00",
		"$JS.API.CONSUMER.DELETE." + bus.EventStream + ".dispatch-events",
		"$JS.API.CONSUMER.DELETE.FLEET_AUDIT.x",
	}
	common := []string{"fleet.audit.rec", "$JS.API.STREAM.INFO." + bus.TelemetryStream, "$JS.API.STREAM.CREATE.FLEET_AUDIT"}
	rules := map[string]rule{
		natsauth.UserTracking: {
			pubOK: append([]string{"fleet.live.v1", "fleet.evt.tracking.status.v1.x", "$KV.FLEET_VEHICLE_GROUPS.v1",
				"$JS.API.CONSUMER.MSG.NEXT.FLEET_TELEMETRY.tracking-p03", "$JS.ACK.FLEET_TELEMETRY.tracking-p03.1.2.3.4.5.6",
				"$JS.API.CONSUMER.CREATE.FLEET_TELEMETRY.tracking-p15.fleet.in.15.*.*", "fleet.dead.tracking-p03"}, common...),
			pubDenied: append([]string{"fleet.evt.geofence.enter.v1.x", "fleet.evt.dispatch.alert.v1.x", "fleet.down.v1.cmd",
				"fleet.up.v1.tele", "$JS.API.CONSUMER.MSG.NEXT.FLEET_TELEMETRY.dispatch-p03",
				"$JS.API.CONSUMER.CREATE.FLEET_TELEMETRY.dispatch-p00", "$KV.FLEET_ZONES.z1", "fleet.dead.dispatch-p00",
				"$SYS.REQ.SERVER.PING"}, protected...),
			subOK:     []string{"fleet.live.*", "_INBOX.tracking.>"},
			subDenied: []string{"_INBOX.>", "fleet.down.>", "fleet.up.>", "_INBOX.dispatch.>", "$SYS.REQ.USER.AUTH"},
		},
		natsauth.UserGeofence: {
			pubOK: append([]string{"fleet.evt.geofence.enter.v1.x", "$KV.FLEET_ZONES.z1", "$JS.API.STREAM.CREATE.KV_FLEET_ZONES",
				"$JS.API.CONSUMER.CREATE.FLEET_EVENTS.abc.fleet.evt.geofence.*.v1.*", "$JS.API.CONSUMER.DELETE.FLEET_EVENTS.abc_1"}, common...),
			pubDenied: append([]string{"fleet.evt.tracking.status.v1.x", "fleet.evt.maintenance.due.v1.x", "fleet.down.v1.cmd",
				"$JS.API.CONSUMER.CREATE.FLEET_EVENTS.dispatch-events.fleet.evt.>", "$JS.API.CONSUMER.MSG.NEXT.FLEET_EVENTS.dispatch-events",
				"$JS.API.CONSUMER.CREATE.FLEET_EVENTS.abc.fleet.evt.dispatch.>", "$JS.API.CONSUMER.CREATE.FLEET_EVENTS.abc"}, protected...),
			subOK:     []string{"fleet.evt.geofence.*.v1.*"},
			subDenied: []string{"fleet.evt.>", "fleet.down.v1.cmd"},
		},
		natsauth.UserMaintenance: {
			pubOK:     append([]string{"fleet.evt.maintenance.due.v1.x"}, common...),
			pubDenied: append([]string{"fleet.evt.geofence.enter.v1.x", "fleet.down.v1.cmd", "fleet.live.v1"}, protected...),
		},
		natsauth.UserDispatch: {
			pubOK: append([]string{"fleet.down.v1.cmd", "fleet.evt.dispatch.alert.v1.x", "$JS.API.CONSUMER.MSG.NEXT.FLEET_EVENTS.dispatch-events",
				"$JS.ACK.FLEET_EVENTS.dispatch-events.1.2.3.4.5.6", "fleet.dead.dispatch-events"}, common...),
			pubDenied: append([]string{"fleet.evt.geofence.enter.v1.x", "fleet.up.v1.reply", "fleet.evt.tracking.fuel_drain.v1.x"}, protected...),
		},
		natsauth.UserTeltonika: {
			pubOK:     append([]string{"fleet.up.v1.tele", "fleet.up.v1.reply"}, common...),
			pubDenied: append([]string{"fleet.down.v1.cmd", "fleet.evt.geofence.enter.v1.x"}, protected...),
			subOK:     []string{"fleet.down.*.cmd"},
			subDenied: []string{"fleet.up.>", "fleet.evt.>"},
		},
		natsauth.UserDevices: {
			pubOK:     append([]string{"$KV.FLEET_DEVICES.v1", "$JS.API.STREAM.CREATE.KV_FLEET_DEVICES"}, common...),
			pubDenied: append([]string{"fleet.up.v1.tele", "fleet.down.v1.cmd", "fleet.evt.geofence.enter.v1.x", "$KV.FLEET_ZONES.z1"}, protected...),
			subDenied: []string{"fleet.>", "_INBOX.>"},
		},
		natsauth.UserCallout: {
			pubOK:     []string{"$JS.API.STREAM.INFO.KV_FLEET_DEVICES", "$JS.API.DIRECT.GET.KV_FLEET_DEVICES.$KV.FLEET_DEVICES.v1"},
			pubDenied: append([]string{"fleet.up.v1.tele", "$KV.FLEET_DEVICES.v1", "fleet.down.v1.cmd", "$KV.FLEET_TOKENS.x"}, protected...),
			subOK:     []string{"$SYS.REQ.USER.AUTH"},
			subDenied: []string{"fleet.>", "_INBOX.>"},
		},
		natsauth.UserLoadgen: {
			pubOK:     []string{"fleet.up.v1.tele"},
			pubDenied: append([]string{"fleet.down.v1.cmd", "fleet.evt.geofence.enter.v1.x", "$JS.API.STREAM.INFO.FLEET_TELEMETRY"}, protected...),
			subOK:     []string{"fleet.down.*.cmd", "fleet.evt.>"},
			subDenied: []string{"_INBOX.>", "fleet.up.>"},
		},
		natsauth.UserPlatform: {
			pubOK:     append([]string{"fleet.down.v1.cmd", "fleet.evt.geofence.enter.v1.x", "$KV.FLEET_ZONES.z1"}, common...),
			pubDenied: protected,
		},
		natsauth.UserAdmin: {
			pubOK: []string{"$JS.API.STREAM.INFO.FLEET_TELEMETRY", "$JS.API.CONSUMER.DELETE.FLEET_TELEMETRY.nothing-here"},
			subOK: []string{">"},
		},
	}
	for _, id := range natsauth.Table(natsauth.TableConfig{}) {
		if id.Name == natsauth.UserKicker {
			continue
		}
		r, ok := rules[id.Name]
		if !ok {
			t.Errorf("identity %s has no rule in this test", id.Name)
			continue
		}
		t.Run(id.Name, func(t *testing.T) {
			nc := s.connect(t, id.Name)
			// Allowed first: the connection's last error must stay empty.
			for _, subj := range r.pubOK {
				if err := nc.Publish(subj, nil); err != nil {
					t.Fatal(err)
				}
			}
			for _, subj := range r.subOK {
				sub, err := nc.SubscribeSync(subj)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := nc.LastError(); err != nil {
				t.Fatalf("allowed operations refused: %v", err)
			}
			check := func(kind, subj string, do func() error) {
				t.Helper()
				if err := do(); err != nil {
					t.Fatal(err)
				}
				_ = nc.Flush()
				err := nc.LastError()
				if err == nil || !strings.Contains(err.Error(), kind) || !strings.Contains(err.Error(), `"`+subj+`"`) {
					t.Errorf("%s %q: last error %v; want a permissions violation", kind, subj, err)
				}
			}
			for _, subj := range r.pubDenied {
				check("Publish", subj, func() error { return nc.Publish(subj, nil) })
			}
			for _, subj := range r.subDenied {
				check("Subscription", subj, func() error { _, err := nc.SubscribeSync(subj); return err })
			}
		})
	}
}

// A service identity deleting or purging the telemetry stream through the JetStream API
// is refused, and the stream and its records are still there.
func TestServiceCannotDeleteOrPurgeStreams(t *testing.T) {
	s := startSecure(t)
	ctx := testCtx(t)
	dev, _ := s.device(t, "veh-1")
	djs, _ := jetstream.New(dev)
	if _, err := djs.Publish(ctx, bus.UpSubject("veh-1", bus.KindTelemetry), []byte("r")); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{natsauth.UserTracking, natsauth.UserGeofence, natsauth.UserDispatch, natsauth.UserPlatform} {
		t.Run(user, func(t *testing.T) {
			js, err := jetstream.New(s.connect(t, user))
			if err != nil {
				t.Fatal(err)
			}
			if err := js.DeleteStream(deniedCtx(t), bus.TelemetryStream); err == nil {
				t.Fatal("deleted the telemetry stream")
			}
			st, err := js.Stream(ctx, bus.TelemetryStream)
			if err != nil {
				t.Fatalf("stream info (allowed): %v", err)
			}
			if err := st.Purge(deniedCtx(t)); err == nil {
				t.Fatal("purged the telemetry stream")
			}
			if err := js.DeleteConsumer(deniedCtx(t), bus.EventStream, natsauth.DispatchEventsDurable); err == nil || strings.Contains(err.Error(), "not found") {
				t.Fatalf("delete dispatch's consumer: %v; want a refusal (timeout or permission error), not an answer", err)
			}
		})
	}
	if n := s.stored(t, bus.TelemetryStream, bus.VehicleFilter("veh-1")); n != 1 {
		t.Fatalf("telemetry has %d records of veh-1 after the attempts, want 1", n)
	}
}

// Only the geofence service may publish geofence events: the tracking identity's attempt is
// refused and nothing is stored.
func TestTrackingCannotPublishGeofenceEvents(t *testing.T) {
	s := startSecure(t)
	ctx := testCtx(t)
	js, err := jetstream.New(s.connect(t, natsauth.UserTracking))
	if err != nil {
		t.Fatal(err)
	}
	subj := bus.EventSubject("geofence", "enter", "veh-1", "forged")
	if _, err := js.Publish(deniedCtx(t), subj, []byte("forged")); err == nil {
		t.Fatal("tracking stored a geofence event")
	}
	if n := s.stored(t, bus.EventStream, bus.EventWildcard()); n != 0 {
		t.Fatalf("%d events stored, want 0", n)
	}
	// The geofence identity may.
	gjs, _ := jetstream.New(s.connect(t, natsauth.UserGeofence))
	if _, err := gjs.Publish(ctx, subj, []byte("real")); err != nil {
		t.Fatalf("geofence publishing its event: %v", err)
	}
}

// The generated configuration is what deployments/nats/nats-server.conf holds (see
// TestExternalConfigIsCurrent in cmd/internal/launch) and parses as nats-server config.
func TestRenderedConfigNamesEveryIdentity(t *testing.T) {
	ids := natsauth.Table(natsauth.TableConfig{})
	conf := natsauth.ServerConfig{Identities: ids, Password: func(u string) string { return "$" + natsauth.PasswordEnv(u) },
		Issuer: "$" + natsauth.IssuerEnv}.Render()
	for _, id := range ids {
		if !strings.Contains(conf, `user: "`+id.Name+`"`) {
			t.Errorf("config has no user %s", id.Name)
		}
	}
	if !strings.Contains(conf, "auth_callout") || !strings.Contains(conf, "max_consumers") {
		t.Fatalf("config lacks the callout or the account limits:\n%s", conf)
	}
	_ = nats.DefaultURL
}
