// Package natsauth gives every NATS client of Fleetwire its own identity: the device
// registry (each tracker's credential, issued, rotated and revoked by the platform), the
// auth callout responder that turns a registered device's login into a user confined to
// its own subjects, and the table of service users with only the subjects each needs.
// Everything is enforced by nats-server itself; this package only decides, at login,
// which permissions the server should apply.
package natsauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/telemetry"
)

// DevicesBucket is the JetStream key-value bucket of registered devices, keyed by device
// (vehicle) id. It holds hashes of the secrets only: a stolen copy logs nobody in.
const DevicesBucket = "FLEET_DEVICES"

// DeviceState says whether a device may connect.
type DeviceState int

// Device states.
const (
	DeviceActive DeviceState = iota
	DeviceRevoked
)

func (s DeviceState) String() string {
	switch s {
	case DeviceActive:
		return "active"
	case DeviceRevoked:
		return "revoked"
	}
	return fmt.Sprintf("DeviceState(%d)", int(s))
}

// Device is a registered tracker, as stored and listed (never its secret).
type Device struct {
	ID       string // vehicle id the device reports as (the same id as in fleet.up.<id>.>)
	Model    string // free text, e.g. "fmb920", "fleetsim"
	Protocol string // "nats", "teltonika", "mqtt", "coap" (informational)
	State    DeviceState
	Created  time.Time
	Rotated  time.Time // when the current secret was issued (Created for the first one)
	Revoked  time.Time // zero while active
	By       string    // principal who last changed it
}

// Sentinel errors of the registry.
var (
	ErrDeviceNotFound  = errors.New("device not found")
	ErrDeviceExists    = errors.New("device already registered")
	ErrBadSecret       = errors.New("wrong device secret")
	ErrDeviceRevoked   = errors.New("device revoked")
	ErrInvalidDeviceID = errors.New("invalid device id")
	ErrBadDeviceField  = errors.New("device model and protocol must be at most 64 printable characters")
)

// Limits of the free-text fields, so a registry entry stays small and log-safe.
const maxFieldLen = 64

// DefaultListLimit and MaxListLimit bound one page of List.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// secretBytes is the entropy of a device secret: 32 bytes from crypto/rand, so a plain
// SHA-256 is the right hash (no password stretching is needed for a value nobody chose).
const secretBytes = 32

// record is a Device as stored: the Device plus the hash of its current secret.
type record struct {
	ID       string    `json:"id"`
	Model    string    `json:"model,omitempty"`
	Protocol string    `json:"protocol,omitempty"`
	State    string    `json:"state"`
	Hash     string    `json:"hash"` // hex SHA-256 of the secret
	Created  time.Time `json:"created"`
	Rotated  time.Time `json:"rotated,omitzero"`
	Revoked  time.Time `json:"revoked,omitzero"`
	By       string    `json:"by,omitempty"`
}

func (r record) device() Device {
	st := DeviceActive
	if r.State != DeviceActive.String() {
		st = DeviceRevoked // anything but "active" is refused
	}
	return Device{ID: r.ID, Model: r.Model, Protocol: r.Protocol, State: st,
		Created: r.Created, Rotated: r.Rotated, Revoked: r.Revoked, By: r.By}
}

func toRecord(d Device, hash string) record {
	return record{ID: d.ID, Model: d.Model, Protocol: d.Protocol, State: d.State.String(), Hash: hash,
		Created: d.Created, Rotated: d.Rotated, Revoked: d.Revoked, By: d.By}
}

// Devices is the device registry: a JetStream KV bucket, mirrored in memory by a watcher
// so Verify costs a map lookup and a hash (no round trip) for any fleet size, and a
// revocation or rotation made through any instance reaches every responder within moments.
type Devices struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu     sync.RWMutex
	byID   map[string]record
	sorted []string // ids in order, rebuilt lazily after a change (nil = stale)
}

// KeyValues provisions key-value buckets: a *bus.Bus (which serialises provisioning) or a
// jetstream.JetStream.
type KeyValues interface {
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// OpenDevices opens (creating if needed) the device bucket and mirrors it until ctx ends.
// It returns once the current contents are loaded.
func OpenDevices(ctx context.Context, js KeyValues, replicas int, log *slog.Logger) (*Devices, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: DevicesBucket, Description: "Fleetwire device registry (secret hashes only)", History: 1, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("device bucket: %w", err)
	}
	d := &Devices{kv: kv, log: log, byID: map[string]record{}}
	if err := bus.MirrorKV(ctx, kv, d.apply); err != nil {
		return nil, fmt.Errorf("device bucket: %w", err)
	}
	return d, nil
}

func (d *Devices) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		d.forget(e.Key())
		return
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil || r.ID != e.Key() {
		d.log.Error("unreadable device record; that device is refused", "id", truncate(e.Key()), "err", err)
		d.forget(e.Key())
		return
	}
	d.remember(r)
}

func (d *Devices) remember(r record) {
	d.mu.Lock()
	if _, ok := d.byID[r.ID]; !ok {
		d.sorted = nil
	}
	d.byID[r.ID] = r
	d.mu.Unlock()
}

func (d *Devices) forget(id string) {
	d.mu.Lock()
	if _, ok := d.byID[id]; ok {
		delete(d.byID, id)
		d.sorted = nil
	}
	d.mu.Unlock()
}

// ValidDeviceID checks id the way every vehicle id is checked (a single NATS subject
// token of [A-Za-z0-9_-], at most 64 bytes): a device id with a dot or a wildcard would
// widen the permissions its login is given.
func ValidDeviceID(id string) error {
	if err := telemetry.ValidVehicleID(id); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidDeviceID, err)
	}
	return nil
}

func validField(s string) bool {
	if len(s) > maxFieldLen {
		return false
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// Add registers dev (its ID, Model and Protocol; the rest is set here) and returns it with
// its secret, which is shown this once and never stored.
func (d *Devices) Add(ctx context.Context, dev Device, by string) (Device, string, error) {
	if err := ValidDeviceID(dev.ID); err != nil {
		return Device{}, "", err
	}
	if !validField(dev.Model) || !validField(dev.Protocol) {
		return Device{}, "", ErrBadDeviceField
	}
	secret := NewDeviceSecret()
	now := time.Now().UTC()
	dev = Device{ID: dev.ID, Model: dev.Model, Protocol: dev.Protocol, State: DeviceActive, Created: now, Rotated: now, By: by}
	r := toRecord(dev, hashHex(secret))
	data, err := json.Marshal(r)
	if err != nil {
		return Device{}, "", err
	}
	if _, err := d.kv.Create(ctx, dev.ID, data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Device{}, "", fmt.Errorf("%s: %w", dev.ID, ErrDeviceExists)
		}
		return Device{}, "", fmt.Errorf("store device %s: %w", dev.ID, err)
	}
	d.remember(r) // the caller's next Verify sees it without waiting for the watcher
	return dev, secret, nil
}

// Ensure registers dev with a secret that is already known (the all-in-one's simulated
// fleet, whose secrets live in its data directory), so it keeps working across restarts
// and a fresh JetStream store. A device an operator revoked stays revoked; an active one
// whose stored hash differs gets this secret.
func (d *Devices) Ensure(ctx context.Context, dev Device, secret, by string) (Device, error) {
	if err := ValidDeviceID(dev.ID); err != nil {
		return Device{}, err
	}
	if !validField(dev.Model) || !validField(dev.Protocol) {
		return Device{}, ErrBadDeviceField
	}
	h := hashHex(secret)
	d.mu.RLock()
	cur, ok := d.byID[dev.ID]
	d.mu.RUnlock()
	if ok && (cur.State != DeviceActive.String() || cur.Hash == h) {
		return cur.device(), nil
	}
	now := time.Now().UTC()
	r := toRecord(Device{ID: dev.ID, Model: dev.Model, Protocol: dev.Protocol, State: DeviceActive, Created: now, Rotated: now, By: by}, h)
	if ok {
		r.Created = cur.Created
	}
	data, err := json.Marshal(r)
	if err != nil {
		return Device{}, err
	}
	if _, err := d.kv.Put(ctx, dev.ID, data); err != nil {
		return Device{}, fmt.Errorf("store device %s: %w", dev.ID, err)
	}
	d.remember(r)
	return r.device(), nil
}

// Get returns the registered device id.
func (d *Devices) Get(_ context.Context, id string) (Device, error) {
	if err := ValidDeviceID(id); err != nil {
		return Device{}, err
	}
	d.mu.RLock()
	r, ok := d.byID[id]
	d.mu.RUnlock()
	if !ok {
		return Device{}, fmt.Errorf("%s: %w", id, ErrDeviceNotFound)
	}
	return r.device(), nil
}

// List returns up to limit devices whose ids sort after the cursor after ("" for the
// first page), in id order, and the cursor of the next page ("" after the last one).
func (d *Devices) List(_ context.Context, after string, limit int) ([]Device, string, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	d.mu.Lock()
	if d.sorted == nil {
		d.sorted = make([]string, 0, len(d.byID))
		for id := range d.byID {
			d.sorted = append(d.sorted, id)
		}
		slices.Sort(d.sorted)
	}
	ids := d.sorted
	i := sort.SearchStrings(ids, after)
	if i < len(ids) && ids[i] == after {
		i++
	}
	out := make([]Device, 0, min(limit, len(ids)-i))
	for ; i < len(ids) && len(out) < limit; i++ {
		out = append(out, d.byID[ids[i]].device())
	}
	next := ""
	if i < len(ids) && len(out) > 0 {
		next = out[len(out)-1].ID
	}
	d.mu.Unlock()
	return out, next, nil
}

// Len is the number of registered devices.
func (d *Devices) Len() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.byID)
}

// update applies change to the stored record of id under optimistic concurrency (a
// concurrent change makes it retry on the new revision).
func (d *Devices) update(ctx context.Context, id string, change func(*record) error) (record, error) {
	if err := ValidDeviceID(id); err != nil {
		return record{}, err
	}
	for attempt := 0; ; attempt++ {
		e, err := d.kv.Get(ctx, id)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return record{}, fmt.Errorf("%s: %w", id, ErrDeviceNotFound)
		}
		if err != nil {
			return record{}, fmt.Errorf("read device %s: %w", id, err)
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return record{}, fmt.Errorf("read device %s: %w", id, err)
		}
		if err := change(&r); err != nil {
			return record{}, err
		}
		data, err := json.Marshal(r)
		if err != nil {
			return record{}, err
		}
		if _, err := d.kv.Update(ctx, id, data, e.Revision()); err != nil {
			if attempt < 5 && ctx.Err() == nil {
				continue // changed under us: read again
			}
			return record{}, fmt.Errorf("update device %s: %w", id, err)
		}
		d.remember(r)
		return r, nil
	}
}

// Revoke refuses id from now on: new logins fail at once, and the callout responder
// disconnects a live connection of it (Responder.Run). Revoking twice is not an error.
func (d *Devices) Revoke(ctx context.Context, id, by string) (Device, error) {
	r, err := d.update(ctx, id, func(r *record) error {
		if r.State != DeviceRevoked.String() {
			r.State = DeviceRevoked.String()
			r.Revoked = time.Now().UTC()
			r.By = by
		}
		return nil
	})
	if err != nil {
		return Device{}, err
	}
	return r.device(), nil
}

// Rotate issues id a new secret and returns it (shown this once); the old secret stops
// working at once and a live connection made with it is disconnected. Rotating a revoked
// device is how it is re-provisioned: it becomes active again with the new secret only.
func (d *Devices) Rotate(ctx context.Context, id, by string) (Device, string, error) {
	secret := NewDeviceSecret()
	r, err := d.update(ctx, id, func(r *record) error {
		r.Hash = hashHex(secret)
		r.State = DeviceActive.String()
		r.Rotated = time.Now().UTC()
		r.Revoked = time.Time{}
		r.By = by
		return nil
	})
	if err != nil {
		return Device{}, "", err
	}
	return r.device(), secret, nil
}

// Verify checks a device's login against the in-memory mirror: no round trip, one SHA-256
// and a constant-time comparison, so it keeps up with a reconnect storm of a large fleet.
// An unknown id is answered ErrDeviceNotFound only after the same hashing work.
func (d *Devices) Verify(_ context.Context, id, secret string) (Device, error) {
	h := sha256.Sum256([]byte(secret))
	d.mu.RLock()
	r, ok := d.byID[id]
	d.mu.RUnlock()
	if !ok {
		return Device{}, ErrDeviceNotFound
	}
	want, err := hex.DecodeString(r.Hash)
	if err != nil || subtle.ConstantTimeCompare(h[:], want) != 1 {
		return Device{}, ErrBadSecret
	}
	dev := r.device()
	if dev.State != DeviceActive {
		return dev, ErrDeviceRevoked
	}
	return dev, nil
}

// Change is one change to the registry seen by Watch.
type Change struct {
	Device  Device
	Deleted bool // the entry was removed from the bucket (by an operator's tool)
	// SecretHash identifies the current secret (a prefix of its hash) so a watcher can
	// tell a rotation from another change without seeing the secret.
	SecretHash string
}

// Watch streams every change made to the registry from now on (by any instance) until
// ctx ends; the channel is closed then. The callout responder uses it to disconnect
// devices that are revoked or rotated while connected.
func (d *Devices) Watch(ctx context.Context) (<-chan Change, error) {
	w, err := d.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch device bucket: %w", err)
	}
	out := make(chan Change, 64)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				c := Change{Device: Device{ID: e.Key()}}
				if e.Operation() != jetstream.KeyValuePut {
					c.Deleted = true
				} else {
					var r record
					if err := json.Unmarshal(e.Value(), &r); err != nil {
						c.Deleted = true // unreadable counts as gone: the device is refused
					} else {
						c.Device, c.SecretHash = r.device(), r.Hash[:min(len(r.Hash), 16)]
					}
				}
				select {
				case out <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// NewServicePassword returns a fresh password for a service identity. An external
// nats-server reads these from its environment ($FLEETWIRE_NATS_<USER>_PASSWORD in the
// rendered configuration), and its configuration parser takes a value that begins with a
// sign or is all digits for a number ("Expected a digit but got ..."; base64url may begin
// with '-'), so the password always begins with letters; the rest is NewDeviceSecret's 32
// random bytes.
func NewServicePassword() string { return "fw" + NewDeviceSecret() }

// NewDeviceSecret returns a fresh device secret: 32 bytes from crypto/rand, base64url.
func NewDeviceSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashHex(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// truncate bounds a caller-supplied string before it goes into a log line.
func truncate(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…(%d bytes)", len(s))
}
