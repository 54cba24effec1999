package client

import (
	"fmt"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A large response decoded on several goroutines gives what decoding it on one does:
// the same entries in the same order, the same ignored count, and a NACK detail that
// lists the invalid resources in the response's order.
func TestParallelDecodeMatchesSerial(t *testing.T) {
	const n = 600
	if n < parallelDecodeMin {
		t.Fatal("the response is too small to be decoded in parallel")
	}
	var valid, invalid []rawResource
	subscribed := map[string]struct{}{}
	for i := range n {
		name := fmt.Sprintf("outbound|9080||svc-%03d", i)
		if i%2 == 0 {
			subscribed[name] = struct{}{}
		}
		r := rawResource{name: name, version: "1", body: anyOf(t, xdstest.Endpoints(name, fmt.Sprintf("10.0.%d.%d:9080", i/250, i%250+1)))}
		valid = append(valid, r)
		if i%97 == 0 {
			// Subscribed and invalid (no cluster_name): NACKed. Unsubscribed ones are ignored.
			r.body = anyOf(t, xdstest.Endpoints("", "10.0.0.1:9080"))
		}
		invalid = append(invalid, r)
	}
	type outcome struct {
		names   []string
		ignored uint64
		err     string
	}
	// One processor takes the serial path; several (even more than the machine has)
	// the parallel one: the response is larger than parallelDecodeMin.
	run := func(procs int, raws []rawResource) outcome {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		ts := newTypeState(resource.EndpointType, false)
		ts.subscribed = subscribed
		ups, err := (&Client{}).decode(ts, raws, "")
		o := outcome{ignored: ts.ignored}
		if err != nil {
			o.err = err.Error()
		}
		for _, u := range ups {
			o.names = append(o.names, msgName(u.e.msg)+"@"+u.version)
		}
		return o
	}
	for _, tc := range []struct {
		name string
		raws []rawResource
	}{{"valid", valid}, {"with invalid", invalid}} {
		serial, parallel := run(1, tc.raws), run(4, tc.raws)
		if fmt.Sprint(serial) != fmt.Sprint(parallel) {
			t.Errorf("%s: serial and parallel decoding differ:\nserial   %v\nparallel %v", tc.name, serial, parallel)
		}
		if tc.name == "valid" && (len(serial.names) != n/2 || serial.ignored != n/2 || serial.err != "") {
			t.Errorf("valid: %d entries, %d ignored, err %q; want %d, %d, none", len(serial.names), serial.ignored, serial.err, n/2, n/2)
		}
		if tc.name == "with invalid" && serial.err == "" {
			t.Error("with invalid: no NACK detail")
		}
	}
}
