package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/report"
)

// DefaultAddr is loopback only: the debug views show the whole mesh configuration, so
// exposing them is a deliberate choice of the operator.
const DefaultAddr = "127.0.0.1:15029"

// Handler serves the endpoints:
//
//	/healthz        200 while the process serves requests
//	/ready          200 once the first consistent snapshot is applied, else 503
//	/metrics        Prometheus text format
//	/debug/xds      the xDS client's status as JSON (types, versions, nonces, NACKs)
//	/debug/apisix   the applied APISIX objects as JSON; ?kind=routes filters by kind
//	/debug/report   the translation report as JSON
//	/debug/controller  the amesh-controller connection and the plugin configs in force
//	/debug/identity the workload certificate in force (never its key)
//
// /debug/apisix shows the private keys of ssl objects as apisix.RedactedKey.
func Handler(src Sources, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if src.Ready != nil && src.Ready() {
			text(w, http.StatusOK, "ready\n")
			return
		}
		text(w, http.StatusServiceUnavailable, "not ready: no consistent xDS snapshot applied yet\n")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if err := WriteMetrics(&buf, src); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", metrics.ContentType)
		w.Write(buf.Bytes())
	})
	mux.HandleFunc("GET /debug/xds", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case src.XDSDetail != nil:
			d, err := src.XDSDetail(r.Context())
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			writeJSON(w, d)
		case src.XDS != nil:
			writeJSON(w, src.XDS())
		default:
			writeJSON(w, struct{}{})
		}
	})
	mux.HandleFunc("GET /debug/apisix", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, objectsView(src.Objects, r.URL.Query().Get("kind")))
	})
	mux.HandleFunc("GET /debug/report", func(w http.ResponseWriter, r *http.Request) {
		entries := []report.Entry{}
		if src.Report != nil {
			entries = append(entries, src.Report()...)
		}
		counts := map[report.Severity]int{}
		for _, e := range entries {
			counts[e.Severity]++
		}
		writeJSON(w, struct {
			Counts  map[report.Severity]int `json:"counts"`
			Entries []report.Entry          `json:"entries"`
		}{counts, entries})
	})
	mux.HandleFunc("GET /debug/controller", func(w http.ResponseWriter, r *http.Request) {
		if src.Controller == nil {
			writeJSON(w, struct {
				Configured bool `json:"configured"`
			}{})
			return
		}
		writeJSON(w, struct {
			Configured bool `json:"configured"`
			Controller
		}{true, src.Controller()})
	})
	mux.HandleFunc("GET /debug/identity", func(w http.ResponseWriter, r *http.Request) {
		if src.Identity == nil {
			writeJSON(w, struct {
				Configured bool `json:"configured"`
			}{})
			return
		}
		writeJSON(w, struct {
			Configured bool `json:"configured"`
			Identity
		}{true, src.Identity()})
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "amesh "+src.Version+"\n/healthz /ready /metrics /debug/xds /debug/apisix /debug/report /debug/controller /debug/identity\n")
	})
	return recoverer(mux, log)
}

// objectsView returns the objects as a JSON object keyed like the shared dict, with the
// values embedded as JSON (encoding/json sorts the keys) and private keys redacted.
func objectsView(objects func() map[string][]byte, kind string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	if objects == nil {
		return out
	}
	prefix := ""
	if kind != "" {
		prefix = "/" + kind + "/"
	}
	for k, v := range objects() {
		v = apisix.Redact(k, v)
		switch {
		case !strings.HasPrefix(k, prefix):
		case v == nil:
			out[k] = json.RawMessage("null") // applied, but the sink cannot read it back
		case json.Valid(v):
			out[k] = json.RawMessage(v)
		default:
			// Shown as a string rather than left out: a view that hides what the
			// sink holds would look like an empty configuration.
			s, _ := json.Marshal(string(v))
			out[k] = s
		}
	}
	return out
}

func text(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	w.Write([]byte(s))
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// recoverer answers 500 instead of letting a panic in a data source reach net/http,
// which would log a stack trace to stderr (inside nginx: the error log).
func recoverer(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("status handler panicked", "path", r.URL.Path, "panic", fmt.Sprint(p))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// Server is a running status server.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
	log  *slog.Logger
}

// Start listens on addr (host:port; port 0 picks a free one) and serves h in the
// background. A listen error is returned at once.
func Start(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status server: %w", err)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan error, 1),
		log:  log,
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !isLoopback(host) {
		log.Warn("status server listens beyond loopback; its debug views show the whole mesh configuration", "addr", ln.Addr().String())
	}
	go func() {
		defer func() {
			if p := recover(); p != nil {
				s.done <- fmt.Errorf("status server panicked: %v", p)
			}
		}()
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, waiting up to ctx for requests in flight.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	if serr := <-s.done; err == nil {
		err = serr
	}
	return err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
