package launch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/fleetwire/fleetwire/edge/console"
	"github.com/fleetwire/fleetwire/pkg/grpcserver"
)

// consoleServer serves the web console (edge/console) on its own address.
type consoleServer struct {
	srv    *http.Server
	lis    net.Listener
	scheme string
}

// newConsoleServer binds the console's address. On a loopback address it speaks plain
// HTTP (a browser on the same machine, no certificate to trust); anywhere else it is HTTPS
// with the gRPC server's certificate, since bearer tokens travel in every request. With
// security off (--insecure) it is plain HTTP everywhere, like the rest.
func newConsoleServer(o Options, gs *grpcserver.Server, tlsCfg *tls.Config) (*consoleServer, error) {
	h, err := console.Handler(gs.GRPC, console.Config{Tiles: o.ConsoleTiles})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	lis, err := listenTCP(o.ConsoleAddr, o.fallback("console-addr"))
	if err != nil {
		return nil, err
	}
	s := &consoleServer{lis: lis, scheme: "http"}
	// No WriteTimeout: watch streams are long-lived responses.
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	if tcp, ok := lis.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() && tlsCfg != nil {
		cfg := tlsCfg.Clone()
		// Browsers have no client certificate to offer: tokens authenticate them.
		cfg.ClientAuth = tls.NoClientCert
		cfg.NextProtos = []string{"h2", "http/1.1"}
		s.srv.TLSConfig = cfg
		s.lis = tls.NewListener(lis, cfg)
		s.scheme = "https"
	}
	return s, nil
}

// Addr is the bound address.
func (s *consoleServer) Addr() string { return s.lis.Addr().String() }

// URL is where a browser opens the console.
func (s *consoleServer) URL() string { return s.scheme + "://" + s.Addr() + "/" }

// Serve serves until ctx ends; open watch streams are cut at shutdown.
func (s *consoleServer) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
