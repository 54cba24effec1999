package status

import (
	"context"
	"sort"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/xds/client"
)

// ForPipeline returns the Sources of the standard pipeline: the xDS client and the agent
// (both used by the amesh command and libxds.so). Either may be nil.
func ForPipeline(version string, c *client.Client, a *agent.Agent) Sources {
	src := Sources{Version: version}
	if c != nil {
		src.XDS = func() XDS { return FromClient(c.Status()) }
		src.XDSDetail = func(ctx context.Context) (any, error) { return c.Dump(ctx) }
	}
	if a != nil {
		src.Ready = a.Ready
		src.Pipeline = func() Pipeline { return FromAgent(a.Stats()) }
		src.Objects = a.Objects
		src.Report = a.Report
	}
	return src
}

// FromClient converts the client's status.
func FromClient(st client.Status) XDS {
	x := XDS{
		State:      string(st.State),
		Server:     st.Server,
		Protocol:   string(st.Protocol),
		Reconnects: st.Reconnects,
		Missing:    len(st.Missing),
	}
	urls := make([]string, 0, len(st.Types))
	for u := range st.Types {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	for _, u := range urls {
		t := st.Types[u]
		x.Types = append(x.Types, XDSType{
			TypeURL: u, Resources: t.Resources, Version: t.Version, Nonce: t.Nonce,
			Responses: t.Responses, ACKs: t.ACKs, NACKs: t.NACKs, LastNACK: t.LastNACK,
		})
	}
	return x
}

// FromAgent converts the agent's counters.
func FromAgent(s agent.Stats) Pipeline {
	return Pipeline{
		Batches: s.Batches, KeysPut: s.KeysPut, KeysDeleted: s.KeysDeleted,
		WriteErrors: s.WriteErrors, LastError: s.LastError, Version: s.Version,
		ObjectsByKind: s.ObjectsByKind, PushToWrite: s.PushToWrite,
	}
}
