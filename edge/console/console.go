// Package console serves the dispatch console: a single-page web application (embedded,
// built without any JavaScript tooling) and the fleet.v1 API for it over the Connect
// protocol. The browser's calls are transcoded to gRPC and handed to the very gRPC server
// the other clients use, so there is one API: the same handlers, the same authentication
// (bearer tokens), the same role table, vehicle-group scoping, watch caps and audit.
package console

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/vanguard"
	"connectrpc.com/vanguard/vanguardgrpc"
	"google.golang.org/grpc"
)

//go:embed web
var webFS embed.FS

// DefaultTiles is the tile server the map uses unless told otherwise.
const DefaultTiles = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"

// DefaultAttribution credits the default tiles.
const DefaultAttribution = "&copy; OpenStreetMap contributors"

// maxRequestBytes bounds one request body, like the gRPC server's receive limit.
const maxRequestBytes = 256 << 10

// Config configures the console.
type Config struct {
	// Tiles is the map tile URL template ({z}/{x}/{y}); "none" draws on a plain
	// background only. Empty: DefaultTiles.
	Tiles string
	// Attribution is shown on the map for the tiles.
	Attribution string
}

// Handler returns the console's HTTP handler: the application at / and every service of
// gs under /<package>.<Service>/<Method> (the Connect protocol, JSON or binary; gRPC-Web
// too), transcoded to gs in-process.
func Handler(gs *grpc.Server, cfg Config) (http.Handler, error) {
	if cfg.Tiles == "" {
		cfg.Tiles, cfg.Attribution = DefaultTiles, DefaultAttribution
	}
	if strings.EqualFold(cfg.Tiles, "none") {
		cfg.Tiles, cfg.Attribution = "", ""
	}
	imgSrc := "'self' data:"
	if cfg.Tiles != "" {
		u, err := url.Parse(strings.NewReplacer("{s}", "a", "{z}", "0", "{x}", "0", "{y}", "0").Replace(cfg.Tiles))
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("console tiles %q: want an http(s) URL template with {z}/{x}/{y}, or none", cfg.Tiles)
		}
		host := u.Host
		if strings.Contains(cfg.Tiles, "{s}") {
			// Subdomains a, b, c: allow the parent domain's subdomains.
			_, rest, _ := strings.Cut(host, ".")
			host = "*." + rest
		}
		imgSrc += " " + u.Scheme + "://" + host
	}
	tc, err := vanguardgrpc.NewTranscoder(gs, vanguard.WithDefaultServiceOptions(vanguard.WithMaxMessageBufferBytes(maxRequestBytes)))
	if err != nil {
		return nil, fmt.Errorf("console transcoder: %w", err)
	}
	static, err := fs.Sub(webFS, "web")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(static)
	settings, err := json.Marshal(map[string]string{"tiles": cfg.Tiles, "attribution": cfg.Attribution})
	if err != nil {
		return nil, err
	}
	// The page loads only its own scripts and talks only to its own origin; tiles are
	// the one foreign source. No framing (clickjacking of the command buttons).
	csp := "default-src 'self'; img-src " + imgSrc + "; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /settings.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(settings)
	})
	mux.Handle("GET /", files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if isRPC(r.URL.Path) {
			r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
			tc.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}), nil
}

// isRPC reports whether path names a method: /<package>.<Service>/<Method>.
func isRPC(path string) bool {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return ok && strings.Contains(svc, ".") && method != "" && !strings.Contains(method, "/")
}
