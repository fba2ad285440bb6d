package main

// Device provisioning (admin): devices add | list | show | revoke | rotate. Each tracker
// gets its own NATS credential, shown once.

import (
	"context"
	"flag"
	"fmt"

	fleetv1 "github.com/fleetwire/fleetwire/proto/fleet/v1"
)

func init() {
	register(command{name: "devices", args: "add ID [--model M] [--protocol P] | list [--limit N] | show ID | revoke ID | rotate ID",
		summary: "tracker credentials: add, list, show, revoke, rotate (admin)", run: runDevices})
}

func runDevices(ctx context.Context, e *env, args []string) error {
	c := fleetv1.NewDeviceServiceClient(e.conn)
	one := func(e *env, fs *flag.FlagSet, args []string, name string) (string, error) {
		pos, err := e.parse(fs, args)
		if err != nil {
			return "", err
		}
		if len(pos) != 1 {
			return "", usageErr("devices %s ID", name)
		}
		return pos[0], nil
	}
	return e.dispatch(ctx, args, []sub{
		{name: "add", args: "ID [--model M] [--protocol P]", summary: "register a device and issue its NATS credential (shown once)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				model := fs.String("model", "", "tracker model, e.g. fmc130 (selects its GPS filter profile)")
				protocol := fs.String("protocol", "nats", "protocol the device speaks: nats, mqtt, teltonika, coap")
				pos, err := e.parse(fs, args)
				if err != nil {
					return err
				}
				if len(pos) != 1 {
					return usageErr("devices add ID [--model M] [--protocol P]")
				}
				resp, err := c.AddDevice(ctx, &fleetv1.AddDeviceRequest{DeviceId: pos[0], Model: *model, Protocol: *protocol})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp)
				}
				printCredential(e, "added", resp.GetDevice(), resp.GetCredential())
				return nil
			}},
		{name: "list", args: "[--limit N]", summary: "every device, revoked ones included (secrets are never shown again)",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				limit := fs.Int("limit", 0, "show at most this many (0 = all)")
				if _, err := e.noPos(fs, args); err != nil {
					return err
				}
				return listDevices(ctx, e, c, *limit)
			}},
		{name: "show", args: "ID", summary: "one device",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := one(e, fs, args, "show")
				if err != nil {
					return err
				}
				resp, err := c.GetDevice(ctx, &fleetv1.GetDeviceRequest{DeviceId: id})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp.GetDevice())
				}
				d := resp.GetDevice()
				return e.fields([][2]string{
					{"device", d.GetDeviceId()}, {"state", enumName(d.GetState().String(), "DEVICE_STATE_")},
					{"model", orDash(d.GetModel())}, {"protocol", orDash(d.GetProtocol())},
					{"created", e.when(d.GetCreatedAt())}, {"secret issued", e.when(d.GetRotatedAt())},
					{"revoked", e.when(d.GetRevokedAt())}, {"changed by", orDash(d.GetChangedBy())},
				})
			}},
		{name: "revoke", args: "ID", summary: "refuse the device from now on; a live connection is closed within seconds",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := one(e, fs, args, "revoke")
				if err != nil {
					return err
				}
				resp, err := c.RevokeDevice(ctx, &fleetv1.RevokeDeviceRequest{DeviceId: id})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp.GetDevice())
				}
				fmt.Fprintf(e.out(), "device %[1]s revoked: it cannot connect, and a live connection is closed within seconds\n(fleetctl devices rotate %[1]s issues a new secret and makes it active again)\n", id)
				return nil
			}},
		{name: "rotate", args: "ID", summary: "issue a new secret (shown once); the old one stops working",
			run: func(ctx context.Context, e *env, fs *flag.FlagSet, args []string) error {
				id, err := one(e, fs, args, "rotate")
				if err != nil {
					return err
				}
				resp, err := c.RotateDevice(ctx, &fleetv1.RotateDeviceRequest{DeviceId: id})
				if err != nil {
					return err
				}
				if e.json() {
					return e.emit(resp)
				}
				printCredential(e, "has a new secret; the old one no longer works and a connection made with it is closed", resp.GetDevice(), resp.GetCredential())
				return nil
			}},
	}, "")
}

func listDevices(ctx context.Context, e *env, c fleetv1.DeviceServiceClient, limit int) error {
	var t *table
	if !e.json() {
		t = e.table("DEVICE", "STATE", "MODEL", "PROTOCOL", "CREATED", "SECRET ISSUED", "REVOKED", "BY")
	}
	req := &fleetv1.ListDevicesRequest{PageSize: 1000}
	shown := 0
	for {
		resp, err := c.ListDevices(ctx, req)
		if err != nil {
			return err
		}
		for _, d := range resp.GetDevices() {
			if limit > 0 && shown >= limit {
				break
			}
			shown++
			if t == nil {
				if err := e.emit(d); err != nil {
					return err
				}
				continue
			}
			t.row(d.GetDeviceId(), enumName(d.GetState().String(), "DEVICE_STATE_"), orDash(d.GetModel()), orDash(d.GetProtocol()),
				e.when(d.GetCreatedAt()), e.when(d.GetRotatedAt()), e.when(d.GetRevokedAt()), orDash(d.GetChangedBy()))
		}
		if resp.GetNextPageToken() == "" || (limit > 0 && shown >= limit) {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if t == nil {
		return nil
	}
	if err := t.flush(); err != nil {
		return err
	}
	if e.format == "table" {
		fmt.Fprintf(e.stderr, "%d devices\n", shown)
	}
	return nil
}

// printCredential shows a new secret once, with how a device uses it.
func printCredential(e *env, what string, d *fleetv1.Device, cred *fleetv1.DeviceCredential) {
	url := cred.GetNatsUrl()
	if url == "" {
		url = "<the platform's NATS URL>"
	}
	fmt.Fprintf(e.out(), `device %[1]s %[2]s.
The secret is shown only now: the platform keeps its hash. Store it on the device.

  NATS URL:  %[3]s
  user:      %[4]s
  password:  %[5]s

The device logs in with this user and password, its replies (JetStream acknowledgements)
under the inbox prefix _INBOX_%[1]s; the NATS server lets it publish only under
fleet.up.%[1]s.> and receive only its own downlink and replies, e.g.:

  nats --server %[3]s --user %[4]s --password '%[5]s' --inbox-prefix _INBOX_%[1]s pub fleet.up.%[1]s.tele ...
`, d.GetDeviceId(), what, url, cred.GetUser(), cred.GetPassword())
}
