package launch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminServer serves /metrics, or the profiles on a port of their own: a profile exposes
// the process's internals and costs CPU, so it is off unless --pprof-addr asks for it, and
// never shares the port a metrics scraper is given.
type adminServer struct {
	srv *http.Server
	lis net.Listener
}

func newAdminServer(addr string, fallback bool, reg *prometheus.Registry) (*adminServer, error) {
	lis, err := listenTCP(addr, fallback)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, lis: lis}, nil
}

// newPprofServer serves /debug/pprof on addr.
func newPprofServer(addr string, fallback bool) (*adminServer, error) {
	lis, err := listenTCP(addr, fallback)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &adminServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, lis: lis}, nil
}

// Addr is the bound address.
func (a *adminServer) Addr() string { return a.lis.Addr().String() }

// Serve serves until ctx ends. A serve failure is returned, and stops the process like any
// other component's: a scraper that cannot reach /metrics must not be the only one to know.
func (a *adminServer) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(a.lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = a.srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
