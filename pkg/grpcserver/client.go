package grpcserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ClientConfig says how a client reaches a Fleetwire server.
type ClientConfig struct {
	// CAFile (or CAPEM) is the CA bundle the server's certificate is checked against;
	// both empty: the system roots.
	CAFile string
	CAPEM  []byte
	// Token is the API token sent as "authorization: Bearer <token>" on every call.
	Token string
	// CertFile and KeyFile are a client certificate for mTLS.
	CertFile, KeyFile string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
	// Plaintext dials without TLS (a server running with security off). A token is never
	// sent over plaintext.
	Plaintext bool
}

// Dial returns a client connection configured by cfg.
func Dial(addr string, cfg ClientConfig, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if cfg.Plaintext {
		if cfg.Token != "" {
			return nil, errors.New("refusing to send a token over plaintext gRPC")
		}
		return grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	pem := cfg.CAPEM
	if cfg.CAFile != "" {
		var err error
		if pem, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("ca: %w", err)
		}
	}
	if len(pem) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("ca: no certificates in the bundle")
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(cfg.Token)))
	}
	return grpc.NewClient(addr, opts...)
}

// bearer sends an API token with every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }
