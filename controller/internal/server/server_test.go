package server

import (
	"testing"

	"google.golang.org/protobuf/proto"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
)

func TestToProto(t *testing.T) {
	c := &v1alpha1.AmeshPluginConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", Generation: 4},
		Spec: v1alpha1.AmeshPluginConfigSpec{
			Priority: -3,
			Scope:    &v1alpha1.Scope{Hosts: []string{"*.svc"}, Ports: []int32{9080, 15006}, Paths: []string{"/api/*"}, Direction: v1alpha1.Outbound},
			Plugins: []v1alpha1.Plugin{
				{Name: "cors"},
				{Name: "fault-injection", Config: &apiextensionsv1.JSON{Raw: []byte(`{"abort":{"http_status":503}}`)}, Override: true},
			},
		},
	}
	want := &pb.PluginConfig{
		Namespace: "ns", Name: "c", Generation: 4, Priority: -3,
		Scope: &pb.Scope{Hosts: []string{"*.svc"}, Ports: []uint32{9080, 15006}, Paths: []string{"/api/*"}, Direction: pb.Direction_DIRECTION_OUTBOUND},
		Plugins: []*pb.Plugin{
			{Name: "cors", ConfigJson: []byte(`{}`)},
			{Name: "fault-injection", ConfigJson: []byte(`{"abort":{"http_status":503}}`), Override: true},
		},
	}
	if got := ToProto(c); !proto.Equal(got, want) {
		t.Errorf("ToProto\n got %v\nwant %v", got, want)
	}
	if got := ToProto(&v1alpha1.AmeshPluginConfig{}); got.Scope != nil {
		t.Errorf("absent scope must stay absent, got %v", got.Scope)
	}
}

func TestEqual(t *testing.T) {
	a := []*pb.PluginConfig{{Name: "a", Generation: 1}}
	if !equal(a, []*pb.PluginConfig{{Name: "a", Generation: 1}}) || equal(a, nil) ||
		equal(a, []*pb.PluginConfig{{Name: "a", Generation: 2}}) {
		t.Error("equal compares wrongly")
	}
}

func TestNotifier(t *testing.T) {
	var n Notifier
	a, b := n.Changed("a"), n.Changed("b")
	n.Notify("a")
	<-a // must be closed now
	select {
	case <-b:
		t.Fatal("namespace b woken by a change in a")
	default:
	}
	if n.Changed("a") == a {
		t.Error("Changed after Notify must return a new channel")
	}
	if n.Changed("b") != b {
		t.Error("an unchanged namespace must keep its channel")
	}
}
