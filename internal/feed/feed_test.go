package feed

import "testing"

// Current returns the latest value and a channel that the next Publish closes, once.
func TestLatest(t *testing.T) {
	var l Latest[int]
	v, changed := l.Current()
	if v != 0 {
		t.Fatalf("zero Latest holds %d", v)
	}
	l.Publish(1)
	l.Publish(2)
	select {
	case <-changed:
	default:
		t.Fatal("Publish did not close the channel of an earlier Current")
	}
	v, changed = l.Current()
	if v != 2 {
		t.Fatalf("Current = %d, want the last published, 2", v)
	}
	select {
	case <-changed:
		t.Fatal("the channel is closed before any newer Publish")
	default:
	}
}
