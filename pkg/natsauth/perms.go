package natsauth

import (
	"fmt"
	"slices"

	"github.com/fleetwire/fleetwire/pkg/audit"
	"github.com/fleetwire/fleetwire/pkg/auth"
	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/storeguard"
)

// The permission table: every NATS identity of the platform and the only subjects it may
// publish and subscribe to. Both the embedded server's configuration and the nats-server
// configuration for external deployments (deployments/nats/nats-server.conf) are
// generated from it (config.go), and perms_test.go checks each identity against a real
// server, so the table is what is enforced.
//
// Devices are not in it: a device logs in through the auth callout (callout.go) and gets
// DevicePermissions for its own id.

// Identity names: one NATS user each.
const (
	UserAdmin       = "admin"       // operators' tools: everything, the only one that may delete or purge
	UserPlatform    = "platform"    // the all-in-one process: every service in one connection
	UserTracking    = "tracking"    // services/tracking
	UserGeofence    = "geofence"    // services/geofence
	UserMaintenance = "maintenance" // services/maintenance
	UserDispatch    = "dispatch"    // services/dispatch
	UserTeltonika   = "teltonika"   // edge/teltonika: the gateway speaks for the Teltonika devices it authenticated
	UserDevices     = "devices"     // the provisioning service (fleet.v1.DeviceService, cmd/devices)
	UserCallout     = "callout"     // the auth callout responder (device logins)
	UserLoadgen     = "loadgen"     // fleetsim load mode: a load generator, never in production
	UserKicker      = "kicker"      // system account: disconnects revoked devices ($SYS.REQ.SERVER.*.KICK)
)

// Accounts of the server configuration.
const (
	// Account holds the platform's streams and every identity but UserKicker.
	Account = "FLEET"
	// SystemAccount is nats-server's system account; UserKicker is its only user.
	SystemAccount = "SYS"
)

// ZonesBucket is the geofence service's zone bucket (services/geofence.DefaultZoneBucket;
// pkg cannot import services, a launch test checks they agree).
const ZonesBucket = "FLEET_ZONES"

// Service event sources (the <source> token of fleet.evt.<source>.>), as each service
// publishes them (a launch test checks them against the services' constants).
const (
	SourceTracking    = "tracking"
	SourceGeofence    = "geofence"
	SourceMaintenance = "maintenance"
	SourceDispatch    = "dispatch"
)

// DispatchEventsDurable is dispatch's consumer on the event stream.
const DispatchEventsDurable = "dispatch-events"

// Permissions are what one identity may do. Deny wins over Allow (nats-server's rule).
type Permissions struct {
	PubAllow, PubDeny []string
	SubAllow, SubDeny []string
	// Responses lets the identity publish one reply to each request it receives, on the
	// request's reply subject whatever it is (nats-server allow_responses).
	Responses bool
}

// Identity is one static NATS user of the table.
type Identity struct {
	Name    string
	Account string
	Perms   Permissions
	// Doc says in a line what the identity is for (written into the generated config).
	Doc string
}

// InboxPrefix is the prefix of an identity's reply subjects (nats.CustomInboxPrefix):
// a connection may only receive replies under its own prefix, so no identity (but the
// admin) sees the replies meant for another.
func InboxPrefix(user string) string { return "_INBOX." + user }

// DeviceInboxPrefix is a device's reply prefix; device ids never contain '.', so
// "_INBOX_<id>" is one token no service's prefix ("_INBOX.<user>") can equal.
func DeviceInboxPrefix(id string) string { return "_INBOX_" + id }

// DevicePermissions are a device's rights: publish its own records, receive its own
// commands and the acknowledgements of its own publishes. No JetStream API (a publish to
// a stream subject with a reply is acknowledged without it), no events, no other vehicle.
// Command replies go on the device's own fleet.up.<id>.reply, so no allow_responses.
func DevicePermissions(id string) Permissions {
	return Permissions{
		PubAllow: []string{"fleet.up." + id + ".>"},
		SubAllow: []string{"fleet.down." + id + ".>", DeviceInboxPrefix(id) + ".>"},
	}
}

// TableConfig parameterises the table.
type TableConfig struct {
	// Partitions of the telemetry stream (bus.DefaultPartitions when 0): each service's
	// durable consumers are named per partition, and each may touch only its own.
	Partitions int
}

const api = "$JS.API."

// protectedStreams are the streams whose deletion or purge loses history or state; only
// the admin identity may delete, purge, delete messages of, or delete consumers of them.
func protectedStreams() []string {
	return []string{bus.TelemetryStream, bus.EventStream, bus.DeadLetterStream, audit.Stream,
		kvStream(auth.TokensBucket), kvStream(auth.GroupsBucket), kvStream(DevicesBucket), kvStream(ZonesBucket)}
}

func kvStream(bucket string) string { return "KV_" + bucket }

// adminOnly is denied to every identity but the admin, whatever its allow list says.
// Consumers of the telemetry stream are all durables (per partition): none may be deleted.
// On the event stream the durable is dispatch's; the ephemeral readers there may delete
// their own readers (ephemeralReader).
func adminOnly() []string {
	return []string{
		api + "STREAM.DELETE.>", api + "STREAM.PURGE.>", api + "STREAM.MSG.DELETE.>",
		api + "CONSUMER.DELETE." + bus.TelemetryStream + ".>", api + "CONSUMER.DELETE." + bus.EventStream + "." + DispatchEventsDurable,
		api + "CONSUMER.DELETE." + bus.DeadLetterStream + ".>", api + "CONSUMER.DELETE." + audit.Stream + ".>",
		api + "STREAM.RESTORE.>", api + "STREAM.SNAPSHOT.>",
		api + "ACCOUNT.PURGE.>", api + "SERVER.>", api + "META.>", api + "STREAM.PEER.>", api + "STREAM.LEADER.>",
		"$SYS.>",
	}
}

// provisions lets an identity create a stream (or bucket) at start-up, as every service
// process does, and read its state.
func provisions(stream string) []string {
	return []string{api + "STREAM.CREATE." + stream, api + "STREAM.UPDATE." + stream, api + "STREAM.INFO." + stream}
}

// kvRead lets an identity read and watch a bucket (direct gets and ordered push
// consumers, whose names are random). A bucket has no durable consumers, only such
// watchers, which the client deletes when it stops one; deleting another process's
// watcher only makes it create a new one.
func kvRead(bucket string) []string {
	s := kvStream(bucket)
	return []string{
		api + "STREAM.INFO." + s, api + "STREAM.MSG.GET." + s,
		api + "DIRECT.GET." + s, api + "DIRECT.GET." + s + ".>",
		api + "CONSUMER.CREATE." + s, api + "CONSUMER.CREATE." + s + ".>", api + "CONSUMER.INFO." + s + ".*",
		api + "CONSUMER.DELETE." + s + ".*",
		"$JS.FC." + s + ".>",
	}
}

// leases lets a service's instances share its partitions by lease (--partitions auto,
// pkg/bus leases.go): read the lease bucket, write its own service's keys only.
func leases(service string) []string {
	out := append(provisions(kvStream(bus.LeaseBucket)), kvRead(bus.LeaseBucket)...)
	return append(out, "$KV."+bus.LeaseBucket+"."+service+".>")
}

// kvWrite lets an identity write keys of a bucket.
func kvWrite(bucket string) []string { return []string{"$KV." + bucket + ".>"} }

// durable lets an identity run its own durable consumer on stream: create it, read its
// state, pull from it, reset it, acknowledge, flow control. Never delete it.
func durable(stream, name string) []string {
	p := api + "CONSUMER."
	return []string{
		p + "CREATE." + stream + "." + name, p + "CREATE." + stream + "." + name + ".>",
		p + "DURABLE.CREATE." + stream + "." + name,
		p + "INFO." + stream + "." + name, p + "MSG.NEXT." + stream + "." + name,
		p + "RESET." + stream + "." + name,
		"$JS.ACK." + stream + "." + name + ".>", "$JS.FC." + stream + ".>",
	}
}

// ephemeralReader lets an identity read stream through ordered (ephemeral) consumers
// filtered inside filter: create them (the API subject of a create carries the consumer's
// one filter, so a reader cannot widen it), pull, read their state, and delete them. An
// ordered consumer deletes its previous consumer at every reset and fetch; refused, each
// would linger until its inactivity threshold and the server would log a violation.
// Consumer names are one subject token, so the permission cannot say "only the ones this
// identity created": it may delete any consumer of stream except the durables, which
// adminOnly and durableOps deny by name. Deleting another reader's ephemeral consumer
// makes that reader create a new one; nothing is lost.
func ephemeralReader(stream, filter string) []string {
	p := api + "CONSUMER."
	return []string{
		p + "CREATE." + stream + ".*." + filter, p + "MSG.NEXT." + stream + ".*",
		p + "INFO." + stream + ".*", p + "DELETE." + stream + ".*",
	}
}

// partitionDurables are a service's per-partition telemetry consumers and their dead
// letter subjects (bus.ConsumePartitions names them "<service>-pNN").
func partitionDurables(service string, partitions int) (pub []string) {
	for p := range partitions {
		name := fmt.Sprintf("%s-p%02d", service, p)
		pub = append(pub, durable(bus.TelemetryStream, name)...)
		pub = append(pub, bus.DeadLetterSubject(name))
	}
	return pub
}

// serviceBase is what every service process does on NATS, whatever it runs: provision the
// streams and the access buckets, serve the token, audit and device APIs (each process
// hosts them, docs/security.md), read vehicle groups, append audit records.
func serviceBase(user string) Permissions {
	var pub []string
	pub = append(pub, api+"INFO", api+"STREAM.NAMES", api+"STREAM.INFO.*")
	for _, s := range []string{bus.TelemetryStream, bus.EventStream, bus.DeadLetterStream, audit.Stream, bus.MQTTStream} {
		pub = append(pub, provisions(s)...)
	}
	for _, b := range []string{auth.TokensBucket, auth.GroupsBucket, DevicesBucket} {
		pub = append(pub, provisions(kvStream(b))...)
		pub = append(pub, kvRead(b)...)
	}
	pub = append(pub, kvWrite(auth.TokensBucket)...)
	pub = append(pub, kvWrite(DevicesBucket)...)
	// The store-generation markers (pkg/storeguard): each Redis-backed service records
	// the generation its consumers last applied against.
	pub = append(pub, provisions(kvStream(storeguard.Bucket))...)
	pub = append(pub, kvRead(storeguard.Bucket)...)
	pub = append(pub, kvWrite(storeguard.Bucket)...)
	// Status and readiness read every consumer's progress: listing and info only.
	for _, s := range []string{bus.TelemetryStream, bus.EventStream} {
		pub = append(pub, api+"CONSUMER.NAMES."+s, api+"CONSUMER.LIST."+s, api+"CONSUMER.INFO."+s+".*")
	}
	pub = append(pub, audit.Subject, api+"STREAM.MSG.GET."+audit.Stream, api+"DIRECT.GET."+audit.Stream)
	return Permissions{PubAllow: pub, SubAllow: []string{InboxPrefix(user) + ".>"}}
}

func (p Permissions) with(pub, sub []string) Permissions {
	p.PubAllow = append(slices.Clone(p.PubAllow), pub...)
	p.SubAllow = append(slices.Clone(p.SubAllow), sub...)
	return p
}

// Table returns every static identity with its permissions.
func Table(cfg TableConfig) []Identity {
	parts := cfg.Partitions
	if parts <= 0 {
		parts = bus.DefaultPartitions
	}
	evt := func(src string) string { return "fleet.evt." + src + ".>" }

	tracking := serviceBase(UserTracking).with(
		append(append(partitionDurables(UserTracking, parts), evt(SourceTracking), bus.LiveWildcard(), "$KV."+auth.GroupsBucket+".>"), leases(UserTracking)...),
		[]string{bus.LiveWildcard()})
	geofence := serviceBase(UserGeofence).with(
		append(append(append(append(partitionDurables(UserGeofence, parts), evt(SourceGeofence)), leases(UserGeofence)...),
			provisions(kvStream(ZonesBucket))...), append(kvRead(ZonesBucket), kvWrite(ZonesBucket)...)...),
		[]string{evt(SourceGeofence)})
	// ListZoneEvents reads the event stream through ordered consumers, whose names are
	// random; dispatch's durable there is not geofence's to touch.
	geofence.PubAllow = append(geofence.PubAllow, ephemeralReader(bus.EventStream, bus.EventSourceFilter(SourceGeofence))...)
	geofence.PubDeny = append(geofence.PubDeny, durableOps(bus.EventStream, DispatchEventsDurable)...)
	maintenance := serviceBase(UserMaintenance).with(
		append(append(partitionDurables(UserMaintenance, parts), evt(SourceMaintenance)), leases(UserMaintenance)...), nil)
	dispatch := serviceBase(UserDispatch).with(
		append(append(append(partitionDurables(UserDispatch, parts), durable(bus.EventStream, DispatchEventsDurable)...),
			bus.DeadLetterSubject(DispatchEventsDurable), evt(SourceDispatch), bus.CommandWildcard()), leases(UserDispatch)...), nil)
	teltonika := serviceBase(UserTeltonika).with(
		[]string{bus.UpWildcard()}, []string{bus.CommandWildcard()})

	ids := []Identity{
		{Name: UserAdmin, Account: Account, Doc: "operators' tools; the only identity that may delete or purge",
			Perms: Permissions{PubAllow: []string{">"}, SubAllow: []string{">"}}},
		{Name: UserTracking, Account: Account, Doc: "tracking service", Perms: tracking},
		{Name: UserGeofence, Account: Account, Doc: "geofence service", Perms: geofence},
		{Name: UserMaintenance, Account: Account, Doc: "maintenance service", Perms: maintenance},
		{Name: UserDispatch, Account: Account, Doc: "dispatch service: the only publisher of commands", Perms: dispatch},
		{Name: UserTeltonika, Account: Account, Doc: "Teltonika gateway: publishes for the devices it authenticated (IMEI registry), receives their commands", Perms: teltonika},
		{Name: UserDevices, Account: Account, Doc: "device provisioning service: writes the device registry", Perms: serviceBase(UserDevices)},
		{Name: UserCallout, Account: Account, Doc: "auth callout responder: answers device logins from the device registry",
			Perms: Permissions{
				PubAllow:  append(append([]string{api + "INFO"}, provisions(kvStream(DevicesBucket))...), kvRead(DevicesBucket)...),
				SubAllow:  []string{AuthCalloutSubject, InboxPrefix(UserCallout) + ".>"},
				Responses: true,
			}},
		{Name: UserLoadgen, Account: Account, Doc: "fleetsim load generator: publishes for every vehicle; development and benchmarks only",
			Perms: Permissions{
				PubAllow: []string{bus.UpWildcard()},
				SubAllow: []string{bus.CommandWildcard(), bus.EventWildcard(), InboxPrefix(UserLoadgen) + ".>"},
			}},
	}
	// The all-in-one's shared connection: the union of the services (one process shares
	// one memory, so separate connections inside it would isolate nothing).
	platform := serviceBase(UserPlatform)
	for _, id := range ids {
		switch id.Name {
		case UserTracking, UserGeofence, UserMaintenance, UserDispatch, UserTeltonika, UserDevices:
			platform = platform.with(id.Perms.PubAllow, id.Perms.SubAllow)
		}
	}
	// The all-in-one reads each partition once for all its services (bus.Shared).
	platform = platform.with(append(kvWrite(auth.GroupsBucket), partitionDurables(bus.SharedDurable, parts)...), nil)
	ids = append(ids, Identity{Name: UserPlatform, Account: Account, Doc: "all-in-one process (every service, one connection)", Perms: platform})
	ids = append(ids, Identity{Name: UserKicker, Account: SystemAccount, Doc: "disconnects revoked devices through the system account's KICK request",
		Perms: Permissions{PubAllow: []string{"$SYS.REQ.SERVER.*.KICK"}, SubAllow: []string{InboxPrefix(UserKicker) + ".>"}}})

	for i := range ids {
		if ids[i].Name == UserAdmin || ids[i].Name == UserKicker {
			continue
		}
		p := &ids[i].Perms
		p.PubAllow = dedup(p.PubAllow)
		p.SubAllow = dedup(p.SubAllow)
		p.PubDeny = dedup(append(p.PubDeny, adminOnly()...))
		if ids[i].Name != UserCallout { // the responder's requests arrive on $SYS.REQ.USER.AUTH
			p.SubDeny = dedup(append(p.SubDeny, "$SYS.>"))
		}
	}
	return ids
}

// durableOps are the consumer operations on one durable (for deny lists).
func durableOps(stream, name string) []string {
	p := api + "CONSUMER."
	return []string{p + "CREATE." + stream + "." + name, p + "CREATE." + stream + "." + name + ".>",
		p + "DURABLE.CREATE." + stream + "." + name, p + "MSG.NEXT." + stream + "." + name, p + "RESET." + stream + "." + name}
}

func dedup(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// Lookup returns the identity named user.
func Lookup(ids []Identity, user string) (Identity, bool) {
	for _, id := range ids {
		if id.Name == user {
			return id, true
		}
	}
	return Identity{}, false
}

// AuthCalloutSubject is where nats-server sends device logins (server.AuthCalloutSubject).
const AuthCalloutSubject = "$SYS.REQ.USER.AUTH"
