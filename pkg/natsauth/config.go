package natsauth

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// AccountLimits bound what the platform account may hold in JetStream, so no identity
// (nor a bug) can create streams until the server's memory or disk is full.
type AccountLimits struct {
	MaxMemory    int64 // bytes of memory-backed streams
	MaxStore     int64 // bytes of file-backed streams
	MaxStreams   int
	MaxConsumers int
}

// DefaultAccountLimits fit the default stream sizes (telemetry 4 GiB, events, dead
// letters and audit 1 GiB each) with room for the KV buckets and ephemeral watchers.
func DefaultAccountLimits() AccountLimits {
	return AccountLimits{MaxMemory: 8 << 30, MaxStore: 16 << 30, MaxStreams: 32, MaxConsumers: 2048}
}

// ServerConfig is the authorization part of a nats-server configuration: the platform
// account with its JetStream limits and static users, the system account with the kicker,
// and the auth callout that sends every other login (the devices) to the responder.
type ServerConfig struct {
	Identities []Identity
	// Password gives the password text of user: the secret itself for the embedded server,
	// or an environment reference such as "$FLEETWIRE_NATS_TRACKING_PASSWORD" for a file.
	Password func(user string) string
	// Issuer is the public account nkey whose seed signs the responder's answers.
	Issuer string
	// XKey is the responder's public curve nkey (or a variable reference); empty: login
	// requests travel unencrypted (the all-in-one, whose responder is in process).
	XKey string
	// Limits of the platform account (DefaultAccountLimits when zero).
	Limits AccountLimits
	// AuthTimeout is how long the server waits for a login to be decided, seconds (5 when
	// 0: a device login is a round trip to the responder, on a busy server too).
	AuthTimeout float64
	// Cluster, when set, makes the server one node of a JetStream cluster whose routes
	// log in with the route identity.
	Cluster *Cluster
}

// ClusterReplicas is the replica count the clustered configuration's account limits make
// room for (the streams of deployments/kubernetes run at R3).
const ClusterReplicas = 3

// RouteUser is the identity one cluster node logs in to another's route port with. It
// exists only in the cluster block: it is not a client user, so its password opens no
// client connection (and no subject), and no client identity's password opens a route.
const RouteUser = "route"

// Environment variables of the clustered external configuration.
const (
	// RoutePasswordEnv holds the route identity's password (the same on every node).
	RoutePasswordEnv = "FLEETWIRE_NATS_ROUTE_PASSWORD"
	// RoutesEnv holds the route URL list, with the route identity's credentials in each:
	// [nats://route:PASSWORD@nats-0.nats:6222, nats://route:PASSWORD@nats-1.nats:6222, ...]
	// (nats-server has no variables inside a string, so the URLs come whole).
	RoutesEnv = "FLEETWIRE_NATS_ROUTES"
	// ServerNameEnv holds the node's name, unique in the cluster (a pod's name).
	ServerNameEnv = "FLEETWIRE_NATS_SERVER_NAME"
)

// Cluster is the route part of a clustered server's configuration. Password and Routes
// are configuration text: literals (Literal, RouteURLs) or variable references.
type Cluster struct {
	Name     string // the cluster's name, the same on every node
	Listen   string // host:port the route listener binds
	Password string // the route identity's password
	Routes   string // the route URL list (RouteURLs), or a variable holding it
}

// RouteURLs writes the route URL list of hosts (host:port each) as a configuration
// value, logging in as the route identity with password.
func RouteURLs(password string, hosts ...string) string {
	var us []string
	for _, h := range hosts {
		us = append(us, quote("nats://"+url.UserPassword(RouteUser, password).String()+"@"+h))
	}
	return "[" + strings.Join(us, ", ") + "]"
}

// PasswordEnv is the environment variable an external deployment sets for user's password.
func PasswordEnv(user string) string {
	return "FLEETWIRE_NATS_" + strings.ToUpper(user) + "_PASSWORD"
}

// IssuerEnv is the environment variable holding the callout issuer's public nkey in the
// external configuration.
const IssuerEnv = "FLEETWIRE_NATS_CALLOUT_ISSUER"

// XKeyEnv is the environment variable holding the responder's public curve nkey in the
// external configuration: the server encrypts login requests (device passwords) to it.
const XKeyEnv = "FLEETWIRE_NATS_CALLOUT_XKEY"

// Render writes the configuration text (nats-server's configuration format).
func (c ServerConfig) Render() string {
	lim := c.Limits
	if lim == (AccountLimits{}) {
		lim = DefaultAccountLimits()
		if c.Cluster != nil {
			// A clustered server counts an R3 stream's bytes three times against the
			// account (nats-server's accountReservation): the default streams at R3
			// need three times the single server's room.
			lim.MaxMemory *= ClusterReplicas
			lim.MaxStore *= ClusterReplicas
		}
	}
	timeout := c.AuthTimeout
	if timeout <= 0 {
		timeout = 5
	}
	var b strings.Builder
	w := func(indent int, format string, a ...any) {
		b.WriteString(strings.Repeat("  ", indent))
		fmt.Fprintf(&b, format, a...)
		b.WriteByte('\n')
	}
	w(0, "accounts {")
	for _, acc := range []string{Account, SystemAccount} {
		w(1, "%s {", acc)
		if acc == Account {
			w(2, "jetstream {")
			w(3, "max_memory: %d", lim.MaxMemory)
			w(3, "max_file: %d", lim.MaxStore)
			w(3, "max_streams: %d", lim.MaxStreams)
			w(3, "max_consumers: %d", lim.MaxConsumers)
			w(2, "}")
		}
		w(2, "users: [")
		for _, id := range c.Identities {
			if id.Account != acc {
				continue
			}
			w(3, "# %s", id.Doc)
			w(3, "{")
			w(4, "user: %s", quote(id.Name))
			w(4, "password: %s", c.Password(id.Name))
			w(4, "permissions: {")
			w(5, "publish: {")
			list(w, 6, "allow", id.Perms.PubAllow)
			list(w, 6, "deny", id.Perms.PubDeny)
			w(5, "}")
			w(5, "subscribe: {")
			list(w, 6, "allow", id.Perms.SubAllow)
			list(w, 6, "deny", id.Perms.SubDeny)
			w(5, "}")
			if id.Perms.Responses {
				w(5, "allow_responses: { max: 1, expires: \"%s\" }", "5s")
			}
			w(4, "}")
			w(3, "}")
		}
		w(2, "]")
		w(1, "}")
	}
	w(0, "}")
	w(0, "system_account: %s", SystemAccount)
	if cl := c.Cluster; cl != nil {
		w(0, "")
		w(0, "# Routes between the nodes log in as %q, a user of the cluster port only: its", RouteUser)
		w(0, "# password opens no client connection, and no client identity's opens a route.")
		w(0, "cluster {")
		w(1, "name: %s", quote(cl.Name))
		w(1, "listen: %s", quote(cl.Listen))
		w(1, "authorization {")
		w(2, "user: %s", quote(RouteUser))
		w(2, "password: %s", cl.Password)
		w(2, "timeout: 2")
		w(1, "}")
		w(1, "routes: %s", cl.Routes)
		w(0, "}")
	}
	w(0, "")
	w(0, "# Every login that is not one of the users above (the devices) is decided by the")
	w(0, "# responder subscribed to %s as %q: it checks the device registry", AuthCalloutSubject, UserCallout)
	w(0, "# and answers with a user JWT confined to the device's own subjects, or a refusal.")
	w(0, "authorization {")
	w(1, "timeout: %s", strconv.FormatFloat(timeout, 'f', -1, 64))
	w(1, "auth_callout {")
	w(2, "issuer: %s", c.Issuer)
	if c.XKey != "" {
		w(2, "xkey: %s", c.XKey)
	}
	w(2, "account: %s", Account)
	var users []string
	for _, id := range c.Identities {
		users = append(users, quote(id.Name))
	}
	w(2, "auth_users: [%s]", strings.Join(users, ", "))
	w(1, "}")
	w(0, "}")
	return b.String()
}

func list(w func(int, string, ...any), indent int, key string, subjects []string) {
	if len(subjects) == 0 {
		return
	}
	w(indent, "%s: [", key)
	for _, s := range subjects {
		w(indent+1, "%s", quote(s))
	}
	w(indent, "]")
}

// quote writes s as a configuration string (subjects start with '$', which unquoted would
// be a variable reference).
func quote(s string) string { return strconv.Quote(s) }

// Literal writes a value (a password, the issuer key) as a configuration string.
func Literal(s string) string { return quote(s) }
