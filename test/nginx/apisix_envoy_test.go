package nginx

// Helpers of the tests that check, in real APISIX, that requests get what Envoy would
// give them: hand-made xDS resources (outbound listeners on the ports APISIX listens
// on, EDS clusters whose endpoints are local backends on 127.0.0.x that answer their
// names), requests with headers or raw paths, and amesh's report from libxds.so's
// status server.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// resourcesOf groups resources by type URL.
func resourcesOf(msgs ...proto.Message) map[string][]proto.Message {
	res := map[string][]proto.Message{}
	for _, m := range msgs {
		u := "type.googleapis.com/" + string(proto.MessageName(m))
		res[u] = append(res[u], m)
	}
	return res
}

// outbound is an outbound listener on port (where APISIX listens) using route
// configuration rds.
func outbound(port int, rds string) proto.Message {
	return xdstest.Listener(fmt.Sprintf("0.0.0.0_%d", port), uint32(port), []string{rds}, "")
}

// edsCluster is an EDS cluster as istiod makes it (LEAST_REQUEST) with its load
// assignment: one endpoint per backend.
func edsCluster(name string, backends ...*backend) []proto.Message {
	addrs := make([]string, len(backends))
	for i, b := range backends {
		addrs[i] = b.addr()
	}
	return []proto.Message{xdstest.EDSCluster(name), xdstest.Endpoints(name, addrs...)}
}

// routeConfig is a route configuration with one virtual host per domain.
func routeConfig(name string, vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: vhs}
}

// vhost is a virtual host for domain with routes.
func vhost(domain string, routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: domain, Domains: []string{domain}, Routes: routes}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

// toCluster is a route sending what m matches to cluster; edit, if not nil, changes
// its action.
func toCluster(name string, m *routev3.RouteMatch, cluster string, edit func(*routev3.RouteAction)) *routev3.Route {
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}
	if edit != nil {
		edit(ra)
	}
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: ra}}
}

// answer is what APISIX answered one request.
type answer struct {
	code   int
	body   string
	took   time.Duration
	header http.Header
}

// call sends GET path to APISIX's port with Host host and the headers (name, value
// pairs).
func (a *apisixInstance) call(port int, host, path string, header ...string) (answer, error) {
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return answer{}, err
	}
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	start := time.Now()
	resp, err := apisixClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: string(b), took: time.Since(start), header: resp.Header}, err
}

// callRaw sends a request whose request line carries path byte for byte (Go's client
// would percent-encode bytes that are not ASCII).
func (a *apisixInstance) callRaw(port int, host, path string) (answer, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		return answer{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return answer{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, body: string(b)}, err
}

// mustCall is call that fails the test on a transport error.
func (a *apisixInstance) mustCall(port int, host, path string, header ...string) answer {
	a.t.Helper()
	ans, err := a.call(port, host, path, header...)
	if err != nil {
		a.t.Fatalf("GET %s%s: %v", host, path, err)
	}
	return ans
}

// waitCode waits until a request answers code, and returns the answer.
func (a *apisixInstance) waitCode(port int, host, path string, code int) answer {
	a.t.Helper()
	var last answer
	waitFor(a.t, fmt.Sprintf("%s%s on port %d to answer %d", host, path, port, code), func() bool {
		var err error
		last, err = a.call(port, host, path)
		return err == nil && last.code == code
	})
	return last
}

// report is amesh's report (libxds.so's /debug/report).
func (a *apisixInstance) report() []report.Entry {
	a.t.Helper()
	resp, err := apisixClient.Get("http://" + a.statusAddr + "/debug/report")
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep struct{ Entries []report.Entry }
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		a.t.Fatal(err)
	}
	return rep.Entries
}

// findEntry returns the first report entry whose resource contains resource, whose
// field is field and whose message contains msg.
func findEntry(entries []report.Entry, resource, field, msg string) (report.Entry, bool) {
	for _, e := range entries {
		if strings.Contains(e.Resource, resource) && e.Field == field && strings.Contains(e.Message, msg) {
			return e, true
		}
	}
	return report.Entry{}, false
}

// counts sends n requests one after another and counts the answers' bodies (status
// and body for any answer other than 200).
func (a *apisixInstance) counts(port int, host, path string, n int) map[string]int {
	a.t.Helper()
	out := map[string]int{}
	for range n {
		ans := a.mustCall(port, host, path)
		if ans.code != http.StatusOK {
			out[fmt.Sprintf("%d %s", ans.code, ans.body)]++
			continue
		}
		out[ans.body]++
	}
	return out
}

// binomialBound is how far from n·p a count may stray when each of n requests goes
// to a host with probability p independently (Envoy's random picks): z standard
// deviations. For z = 4.5 a correct balancer fails one host's check with probability
// 7e-6, so even 25 hosts checked at once fail a correct one once in 5,000 runs.
func binomialBound(n int) func(p float64) float64 {
	const z = 4.5
	return func(p float64) float64 { return z * math.Sqrt(float64(n)*p*(1-p)) }
}

// checkShares checks that got (answers by backend name) holds n answers from the
// backends of want (name -> weight), each at most bound(p) from its share p of n.
func checkShares(t *testing.T, what string, got map[string]int, n int, want map[string]uint32, bound func(p float64) float64) {
	t.Helper()
	var total float64
	for _, w := range want {
		total += float64(w)
	}
	seen := 0
	for name, w := range want {
		p := float64(w) / total
		exp, k := p*float64(n), got[name]
		seen += k
		if d := math.Abs(float64(k) - exp); d > bound(p) {
			t.Errorf("%s: %s got %d of %d requests, want %.1f ± %.1f (weight %d of %.0f)", what, name, k, n, exp, bound(p), w, total)
		}
	}
	if seen != n {
		t.Errorf("%s: %d of %d requests reached none of the backends: %v", what, n-seen, n, got)
	}
}
