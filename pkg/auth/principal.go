// Package auth decides who calls Fleetwire's gRPC API and what they may do: principals
// authenticated by platform-issued API tokens or mTLS client certificates, one role each,
// optionally limited to vehicle groups; a table giving every method the role it needs;
// interceptors enforcing both; and the development credentials the all-in-one creates for
// itself. Cryptography is the standard library's (crypto/tls, x509, sha256); nothing here
// invents its own.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Role is what a principal may do. Each role includes the ones below it.
type Role int

// Roles, weakest first.
const (
	RoleNone Role = iota
	Viewer
	Dispatcher
	Supervisor
	Admin
)

var roleNames = [...]string{"none", "viewer", "dispatcher", "supervisor", "admin"}

func (r Role) String() string {
	if r < 0 || int(r) >= len(roleNames) {
		return fmt.Sprintf("role(%d)", int(r))
	}
	return roleNames[r]
}

// ErrBadRole is returned for a role name that is not one of the four.
var ErrBadRole = errors.New("unknown role (want viewer, dispatcher, supervisor or admin)")

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames {
		if i > 0 && strings.EqualFold(s, n) {
			return Role(i), nil
		}
	}
	return RoleNone, fmt.Errorf("%q: %w", s, ErrBadRole)
}

// Method names how a principal proved who it is.
const (
	ViaToken    = "token"
	ViaMTLS     = "mtls"
	ViaInsecure = "insecure" // security turned off: everyone is an anonymous admin
)

// Principal is an authenticated caller.
type Principal struct {
	Name   string
	Role   Role
	Groups []string // vehicle groups it is limited to; empty = every vehicle
	Via    string   // ViaToken, ViaMTLS or ViaInsecure
	ID     string   // token id or certificate serial, for revocation and audit
}

// Scoped reports whether the principal is limited to vehicle groups.
func (p *Principal) Scoped() bool { return p != nil && len(p.Groups) > 0 }

// SeesGroups reports whether a vehicle in groups is visible to the principal: always for
// an unscoped principal, else when the vehicle shares one of the principal's groups.
func (p *Principal) SeesGroups(groups []string) bool {
	if !p.Scoped() {
		return true
	}
	for _, g := range groups {
		if slices.Contains(p.Groups, g) {
			return true
		}
	}
	return false
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the authenticated principal of a call, nil when there is none
// (a server running without the auth interceptors).
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// Who is the principal's name for records that say who did something, "anonymous" when
// the server runs without authentication.
func Who(ctx context.Context) string {
	if p := FromContext(ctx); p != nil {
		return p.Name
	}
	return "anonymous"
}
