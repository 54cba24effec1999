package plugins

import "testing"

// BenchmarkForRoute translates every route of istiod's route configuration (a mix of
// plain routes and routes with every feature) once per iteration.
func BenchmarkForRoute(b *testing.B) {
	rc := loadRDS(b)
	var ins []Input
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			ins = append(ins, Input{RouteConfig: rc, VirtualHost: vh, Route: r, MirrorTarget: mirrorTargets})
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, in := range ins {
			ForRoute(in)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ins)), "ns/route")
}

// BenchmarkForRoutePlain is the common case: a route with no plugin-borne feature.
func BenchmarkForRoutePlain(b *testing.B) {
	rc := loadRDS(b)
	vh := rc.GetVirtualHosts()[0]
	in := Input{RouteConfig: rc, VirtualHost: vh, Route: vh.GetRoutes()[0]}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ForRoute(in)
	}
}
