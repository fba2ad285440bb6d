package chaos

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fleetwire/fleetwire/pkg/bus"
	"github.com/fleetwire/fleetwire/pkg/natsauth"
	"github.com/fleetwire/fleetwire/tests/internal/faulttest"
)

// natsServer is an embedded nats-server on a fixed port with its own store directory,
// so it can be stopped and started again with its data. It is configured as a secured
// deployment's server is: pkg/natsauth's permission table, a password per identity
// (generated into creds), the auth callout for every other login. The test itself logs
// in as the admin identity; every service process as its own.
type natsServer struct {
	t     *testing.T
	port  int
	dir   string
	creds *natsauth.DevCredentials
	conf  string
	b     *bus.Bus
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	ids := natsauth.Table(natsauth.TableConfig{})
	users := make([]string, 0, len(ids))
	for _, id := range ids {
		users = append(users, id.Name)
	}
	creds, err := natsauth.EnsureDevCredentials(filepath.Join(t.TempDir(), "nats"), users)
	if err != nil {
		t.Fatal(err)
	}
	n := &natsServer{t: t, port: faulttest.FreePort(t), dir: t.TempDir(), creds: creds}
	n.conf = natsauth.ServerConfig{
		Identities: ids,
		Password:   func(u string) string { return natsauth.Literal(creds.Passwords[u]) },
		Issuer:     natsauth.Literal(creds.IssuerPublic),
	}.Render()
	n.start()
	t.Cleanup(n.stop)
	return n
}

// login is the environment of a service process logging in as user.
func (n *natsServer) login(user string) []string {
	return []string{"FLEETWIRE_NATS_USER=" + user, "FLEETWIRE_NATS_PASSWORD_FILE=" + n.creds.PasswordFile(user)}
}

func (n *natsServer) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

func (n *natsServer) start() {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Open(ctx, bus.Config{URL: bus.Embedded, ListenPort: n.port, StoreDir: n.dir, ServerConfig: n.conf,
		User: natsauth.UserAdmin, Password: n.creds.Passwords[natsauth.UserAdmin], InboxPrefix: natsauth.InboxPrefix(natsauth.UserAdmin)},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		n.t.Fatalf("nats: %v", err)
	}
	n.b = b
}

func (n *natsServer) stop() {
	if n.b != nil {
		n.b.Close()
		n.b = nil
	}
}

func (n *natsServer) restart() {
	n.stop()
	n.start()
}
