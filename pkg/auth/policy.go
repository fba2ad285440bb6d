package auth

import (
	"context"
	"errors"
	"fmt"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

// Rule is what one gRPC method requires.
type Rule struct {
	// Role is the weakest role allowed to call the method. RoleNone makes the method
	// public: no credentials needed (health checks only).
	Role Role
	// Mutates marks a call that changes state; every such call is audited.
	Mutates bool
	// Raise, when set, may demand a stronger role after reading the request (IMMOBILIZE and
	// RESUME need a supervisor although other commands need only a dispatcher).
	Raise func(req any) Role
	// Watch marks a long-lived stream that counts against the per-principal watch cap.
	Watch bool
}

const (
	tracking    = "/fleet.v1.TrackingService/"
	geofence    = "/fleet.v1.GeofenceService/"
	maintenance = "/fleet.v1.MaintenanceService/"
	alerts      = "/fleet.v1.AlertService/"
	commands    = "/fleet.v1.CommandService/"
	tokens      = "/fleet.v1.TokenService/"
	devices     = "/fleet.v1.DeviceService/"
	audit       = "/fleet.v1.AuditService/"
	identity    = "/fleet.v1.IdentityService/"
	statusSvc   = "/fleet.v1.StatusService/"
)

var (
	read  = Rule{Role: Viewer}
	watch = Rule{Role: Viewer, Watch: true}
	admin = Rule{Role: Admin, Mutates: true}
)

// CommandRole is the role sending a command of kind needs, and cancelling it while it is
// queued: cutting or restoring a moving vehicle's engine is a supervisor's call, and so is
// withdrawing such a call.
func CommandRole(kind fleetv1.CommandKind) Role {
	switch kind {
	case fleetv1.CommandKind_COMMAND_KIND_IMMOBILIZE, fleetv1.CommandKind_COMMAND_KIND_RESUME:
		return Supervisor
	}
	return Dispatcher
}

// criticalCommand raises SendCommand to the role its kind needs.
func criticalCommand(req any) Role {
	if r, ok := req.(*fleetv1.SendCommandRequest); ok {
		return CommandRole(r.GetKind())
	}
	return Dispatcher
}

// Require reports, as PermissionDenied-worthy ErrForbidden, a caller weaker than need. For
// the edge handlers whose required role depends on stored data the guard cannot read (the
// kind of a command addressed by id). True for a server running without authentication.
func Require(ctx context.Context, need Role) error {
	if p := FromContext(ctx); p != nil && p.Role < need {
		return fmt.Errorf("%w: %s %q needs %s", ErrForbidden, p.Role, p.Name, need)
	}
	return nil
}

// ErrForbidden is returned by Require.
var ErrForbidden = errors.New("permission denied")

// Policy is the role every method needs. A method missing here is refused for everyone
// (PermissionDenied), and TestEveryMethodHasARule fails, so a new RPC cannot ship open.
var Policy = map[string]Rule{
	// Standard services: health stays public so load balancers and probes work without
	// credentials; reflection (what grpcurl uses to list services) needs any principal.
	"/grpc.health.v1.Health/Check":                                   {Role: RoleNone},
	"/grpc.health.v1.Health/List":                                    {Role: RoleNone},
	"/grpc.health.v1.Health/Watch":                                   {Role: RoleNone},
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      read,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": read,

	// Lag and store generations: operational, read-only.
	statusSvc + "GetStatus": read,

	tracking + "GetVehicle":            read,
	tracking + "ListVehicles":          read,
	tracking + "WatchVehicles":         watch,
	tracking + "SearchNearestVehicles": read,
	tracking + "GetTrack":              read,
	tracking + "ListTrips":             read,
	tracking + "ListStops":             read,
	tracking + "RegisterVehicle":       admin,
	tracking + "UpdateVehicle":         admin,
	tracking + "DeleteVehicle":         admin, // registry data, and it erases history
	tracking + "ExportTrack":           read,

	geofence + "CreateZone":      admin,
	geofence + "UpdateZone":      admin,
	geofence + "DeleteZone":      admin,
	geofence + "GetZone":         read,
	geofence + "ListZones":       read,
	geofence + "ExportZones":     read,
	geofence + "VehiclesInZone":  read,
	geofence + "ZonesForVehicle": read,
	geofence + "ZonesAtPoint":    read,
	geofence + "ListZoneEvents":  read,
	geofence + "WatchZoneEvents": watch,

	maintenance + "CreatePlan": admin,
	maintenance + "ListPlans":  read,
	maintenance + "DeletePlan": admin,
	maintenance + "SetGroup":   admin, // which plans apply to a vehicle: registry data
	// Recording work done in the workshop is daily operations, not configuration.
	maintenance + "RecordService":    {Role: Dispatcher, Mutates: true},
	maintenance + "ListServiceLog":   read,
	maintenance + "ListDue":          read,
	maintenance + "GetVehicleHealth": read,
	maintenance + "ListFaultCodes":   read,
	maintenance + "SetFuelProfile":   admin, // tank calibration is vehicle configuration
	maintenance + "GetFuelReport":    read,

	alerts + "ListAlerts":       read,
	alerts + "WatchAlerts":      watch,
	alerts + "AcknowledgeAlert": {Role: Dispatcher, Mutates: true},
	alerts + "ResolveAlert":     {Role: Dispatcher, Mutates: true},
	// Bulk changes are a dispatcher's too (clearing a flood is daily work); the handler
	// audits every alert changed as its single-alert method besides this call's record.
	alerts + "AcknowledgeAlerts": {Role: Dispatcher, Mutates: true},
	alerts + "ResolveAlerts":     {Role: Dispatcher, Mutates: true},

	commands + "SendCommand":  {Role: Dispatcher, Mutates: true, Raise: criticalCommand},
	commands + "GetCommand":   read,
	commands + "ListCommands": read,
	// A dispatcher at least; the edge demands CommandRole of the cancelled command's kind
	// (auth.Require), which only it can read.
	commands + "CancelCommand": {Role: Dispatcher, Mutates: true},

	tokens + "CreateToken": admin,
	tokens + "ListTokens":  {Role: Admin},
	tokens + "RevokeToken": admin,

	audit + "ListAuditRecords": {Role: Admin},

	// Who the caller is: any principal may ask about itself.
	identity + "WhoAmI": read,

	// Device credentials are the fleet's keys: even reading the registry is an admin's
	// business (it lists every device id an attacker could try).
	devices + "AddDevice":    admin,
	devices + "GetDevice":    {Role: Admin},
	devices + "ListDevices":  {Role: Admin},
	devices + "RevokeDevice": admin,
	devices + "RotateDevice": admin,
}
