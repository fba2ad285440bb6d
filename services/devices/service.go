// Package devices is the provisioning service: fleet.v1.DeviceService in front of the
// device registry (pkg/natsauth), where each tracker's NATS credential is issued, rotated
// and revoked. The registry is what the NATS auth callout consults at every device login,
// so a device this service has not added, or has revoked, cannot connect at all.
//
// The service keeps no state of its own: the registry is a JetStream key-value bucket
// that every instance mirrors. Secrets leave it once, in the Add and Rotate answers; the
// registry keeps their hashes, and the audit trail records the request (never the answer).
package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fleetwire/fleetwire/pkg/apierr"
	"github.com/fleetwire/fleetwire/pkg/metrics"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
)

// Name is the service's name in logs, metrics and the fixed Unavailable message.
const Name = "devices"

// Registry is the device registry the service fronts; *natsauth.Devices implements it.
// Declared here, where it is consumed.
type Registry interface {
	Add(ctx context.Context, dev natsauth.Device, by string) (natsauth.Device, string, error)
	Get(ctx context.Context, id string) (natsauth.Device, error)
	List(ctx context.Context, after string, limit int) ([]natsauth.Device, string, error)
	Revoke(ctx context.Context, id, by string) (natsauth.Device, error)
	Rotate(ctx context.Context, id, by string) (natsauth.Device, string, error)
	Verify(ctx context.Context, id, secret string) (natsauth.Device, error)
}

var _ Registry = (*natsauth.Devices)(nil)

// Config configures the service.
type Config struct {
	// DeviceNATSURL is the address devices connect to, handed out with every new
	// credential. It is not the service's own NATS URL: inside a cluster the service
	// reaches nats://nats:4222, while trackers come in through a public name. Empty: the
	// credential says nothing about where to connect.
	DeviceNATSURL string
}

// Credential is how a device connects: NATS user = the device id, password = the secret.
type Credential struct {
	NATSURL, User, Password string
}

// Service provisions devices.
type Service struct {
	cfg     Config
	reg     Registry
	log     *slog.Logger
	changes *prometheus.CounterVec
}

// New returns the service over reg. reg may be nil only in tests that never call it.
func New(cfg Config, reg Registry, log *slog.Logger, promReg prometheus.Registerer) (*Service, error) {
	s := &Service{cfg: cfg, reg: reg, log: log,
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwire_device_changes_total",
			Help: "Device registry changes made through the API, by operation (add, rotate, revoke) and result (ok, refused, unavailable).",
		}, []string{"op", "result"}),
	}
	if err := metrics.Register(promReg, s.changes); err != nil {
		return nil, fmt.Errorf("devices: %w", err)
	}
	return s, nil
}

// Add registers dev and issues its credential.
func (s *Service) Add(ctx context.Context, dev natsauth.Device, by string) (natsauth.Device, Credential, error) {
	d, secret, err := s.reg.Add(ctx, dev, by)
	if err = s.count("add", err); err != nil {
		return natsauth.Device{}, Credential{}, err
	}
	s.log.Info("device added", "device", d.ID, "by", by)
	return d, s.credential(d.ID, secret), nil
}

// Get returns one device.
func (s *Service) Get(ctx context.Context, id string) (natsauth.Device, error) {
	d, err := s.reg.Get(ctx, id)
	return d, outage(err)
}

// List returns a page of devices after the cursor and the next page's cursor ("" after
// the last page).
func (s *Service) List(ctx context.Context, after string, limit int) ([]natsauth.Device, string, error) {
	if after != "" {
		// The cursor is a device id this service returned; anything else is not a cursor.
		if err := natsauth.ValidDeviceID(after); err != nil {
			return nil, "", fmt.Errorf("%w: page token: %w", ErrInvalid, err)
		}
	}
	list, next, err := s.reg.List(ctx, after, limit)
	return list, next, outage(err)
}

// Revoke refuses the device from now on.
func (s *Service) Revoke(ctx context.Context, id, by string) (natsauth.Device, error) {
	d, err := s.reg.Revoke(ctx, id, by)
	if err = s.count("revoke", err); err != nil {
		return natsauth.Device{}, err
	}
	s.log.Info("device revoked", "device", d.ID, "by", by)
	return d, nil
}

// Rotate issues a new secret; the old one stops working.
func (s *Service) Rotate(ctx context.Context, id, by string) (natsauth.Device, Credential, error) {
	d, secret, err := s.reg.Rotate(ctx, id, by)
	if err = s.count("rotate", err); err != nil {
		return natsauth.Device{}, Credential{}, err
	}
	s.log.Info("device secret rotated", "device", d.ID, "by", by)
	return d, s.credential(d.ID, secret), nil
}

func (s *Service) credential(id, secret string) Credential {
	return Credential{NATSURL: s.cfg.DeviceNATSURL, User: id, Password: secret}
}

// ErrInvalid marks a request the service itself refuses (the registry's own sentinels
// cover ids and fields).
var ErrInvalid = errors.New("invalid request")

// refusals are the registry's answers about the request, not about its health.
var refusals = []error{
	natsauth.ErrDeviceNotFound, natsauth.ErrDeviceExists, natsauth.ErrInvalidDeviceID,
	natsauth.ErrBadDeviceField, natsauth.ErrDeviceRevoked, natsauth.ErrBadSecret, ErrInvalid,
}

// outage marks every registry error that is not one of its answers about the request as
// a dependency outage: the registry is a JetStream bucket, and whatever else it returns
// comes from NATS (a timeout, no responders, a lost leader).
func outage(err error) error {
	if err == nil {
		return nil
	}
	for _, r := range refusals {
		if errors.Is(err, r) {
			return err
		}
	}
	return apierr.Unavailable("device registry", err)
}

// count classifies a change's result for the metric and returns the error as the edge
// should see it.
func (s *Service) count(op string, err error) error {
	err = outage(err)
	result := "ok"
	switch {
	case errors.Is(err, apierr.ErrUnavailable):
		result = "unavailable"
	case err != nil:
		result = "refused"
	}
	s.changes.WithLabelValues(op, result).Inc()
	return err
}
