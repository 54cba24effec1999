package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
)

// dial creates a gRPC connection for one stream attempt. A fresh connection per
// attempt keeps the reconnect timing in our backoff (not grpc's own) and re-reads the
// CA file, so a rotated mesh root is picked up on reconnect.
func (c *Client) dial() (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		// As istio-agent: pings only while the stream is open (a connection carries one
		// stream attempt), which is what istiod's enforcement policy expects.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    c.cfg.KeepaliveTime,
			Timeout: c.cfg.KeepaliveTimeout,
		}),
		// xDS responses for a large mesh exceed grpc's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxMessageBytes), grpc.ForceCodecV2(newCodec())),
		// No buffer of this connection is pooled (buffers.go).
		experimental.WithBufferPool(mem.NopBufferPool{}),
	}
	if t := c.cfg.TLS; t != nil {
		tc, err := tlsConfig(c.cfg.Server, t)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if t.TokenFile != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(tokenFile(t.TokenFile)))
		}
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	target := c.cfg.Server
	if !strings.HasPrefix(target, "unix:") {
		// Plain host:port; passthrough hands it to the dialer unchanged.
		target = "passthrough:///" + target
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("xds: invalid server address %q: %w", c.cfg.Server, err)
	}
	return conn, nil
}

func tlsConfig(server string, t *TLSConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(server)
		if err != nil {
			return nil, fmt.Errorf("xds: TLS needs a host:port server address, got %q", server)
		}
		tc.ServerName = host
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("xds: TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("xds: TLS CA file %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// tokenFile sends the token in the file as a bearer token. Kubernetes rotates projected
// tokens by replacing the file, so it is read again for every stream (once per RPC).
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("xds: token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("xds: token file %s is empty", string(f))
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity keeps the token off plaintext connections.
func (tokenFile) RequireTransportSecurity() bool { return true }

// describe turns a stream error into one that says what went wrong in terms of the
// configuration: wrong address, TLS failure, rejected token.
func describe(server string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("xds %s: %w", server, errStreamClosed)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("xds %s: %w", server, err)
	}
	msg := st.Message()
	switch {
	case st.Code() == codes.ResourceExhausted && strings.Contains(msg, "larger than max"):
		return fmt.Errorf("xds %s: a response exceeds the receive limit (raise %s if the mesh needs it): %w",
			server, bootstrap.EnvMaxMessageBytes, err)
	case st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied:
		return fmt.Errorf("xds %s: server rejected our credentials (token): %w", server, err)
	case strings.Contains(msg, "x509") || strings.Contains(msg, "tls:") || strings.Contains(msg, "handshake"):
		return fmt.Errorf("xds %s: TLS failure (check the CA file and server name): %w", server, err)
	case st.Code() == codes.Unavailable && (strings.Contains(msg, "connection refused") ||
		strings.Contains(msg, "no such file") || strings.Contains(msg, "no such host")):
		return fmt.Errorf("xds %s: cannot connect (wrong address or server down): %w", server, err)
	}
	return fmt.Errorf("xds %s: %w", server, err)
}

var errStreamClosed = errors.New("stream closed by server")
