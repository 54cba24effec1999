package certwatch

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is a watcher of a temporary directory, driven poll by poll, with a clock the
// test moves, a CA and every key it issued (none may reach the log).
type fixture struct {
	t    *testing.T
	dir  string
	w    *Watcher
	ca   *identitytest.CA
	now  time.Time
	log  *identitytest.Log
	keys [][]byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, dir: filepath.Join(t.TempDir(), "data"), ca: ca, now: time.Now(), log: &identitytest.Log{}}
	f.w = New(Options{Dir: f.dir, Now: func() time.Time { return f.now },
		Logger: slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	t.Cleanup(func() {
		for _, k := range f.keys {
			if m := identitytest.Leaks([]byte(f.log.String()), k); m != "" {
				t.Errorf("key material %q in the log:\n%s", m, f.log)
			}
		}
	})
	return f
}

func (f *fixture) issue(o identitytest.Options) identitytest.Files {
	f.t.Helper()
	files, err := f.ca.Issue(o)
	if err != nil {
		f.t.Fatal(err)
	}
	f.keys = append(f.keys, files.Key)
	return files
}

func (f *fixture) write(name string, data []byte) {
	f.t.Helper()
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := identitytest.WriteFile(filepath.Join(f.dir, name), data); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) writeAll(files identitytest.Files) {
	f.t.Helper()
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := files.Write(f.dir); err != nil {
		f.t.Fatal(err)
	}
}

// start writes a first identity and checks that the watcher publishes it.
func (f *fixture) start() identitytest.Files {
	f.t.Helper()
	files := f.issue(identitytest.Options{})
	f.writeAll(files)
	f.wantIdentity(f.state(), files)
	return files
}

// state polls once and returns what the watcher publishes, checking that whatever is
// in force is one consistent identity (at a time it is valid: expiry is not at issue).
func (f *fixture) state() identity.State {
	f.t.Helper()
	f.w.poll()
	st, _ := f.w.Current()
	if id := st.Identity; id != nil {
		if _, err := identity.Parse([]byte(id.Key.Reveal()), []byte(id.CertChain), []byte(id.Roots), id.NotBefore); err != nil {
			f.t.Fatalf("an inconsistent identity is in force: %v", err)
		}
	}
	if st.Dir != f.dir {
		f.t.Fatalf("state names dir %q, want %q", st.Dir, f.dir)
	}
	return st
}

// wantIdentity checks that the identity in force holds files exactly.
func (f *fixture) wantIdentity(st identity.State, files identitytest.Files) {
	f.t.Helper()
	id := st.Identity
	if id == nil {
		f.t.Fatalf("no identity in force, want serial %s (problem %q)", files.Serial, st.Problem)
	}
	if id.Serial != files.Serial || id.CertChain != string(files.Chain) || id.Key.Reveal() != string(files.Key) || id.Roots != string(files.Root) {
		f.t.Fatalf("identity in force has serial %s, want the files of serial %s", id.Serial, files.Serial)
	}
}

// The directory absent, then empty: no identity, said once. The files appear: their
// identity is published, once; polls without a change publish nothing.
func TestAbsentThenPublished(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		if st := f.state(); st.Identity != nil || st.Problem != "" {
			t.Fatalf("state without a directory: %+v", st)
		}
	}
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if st := f.state(); st.Identity != nil || st.Problem != "" {
		t.Fatalf("state with an empty directory: %+v", st)
	}
	if n := strings.Count(f.log.String(), "no workload certificate"); n != 1 {
		t.Errorf("the absence is logged %d times, want once:\n%s", n, f.log)
	}
	if s := f.w.Status(); s.Files != "absent" || s.Published != 0 {
		t.Errorf("status %+v", s)
	}

	files := f.issue(identitytest.Options{})
	f.writeAll(files)
	_, changed := f.w.Current()
	f.wantIdentity(f.state(), files)
	select {
	case <-changed:
	default:
		t.Fatal("publishing did not close the channel of Current")
	}
	_, changed = f.w.Current()
	for range 3 {
		f.state()
	}
	select {
	case <-changed:
		t.Fatal("polls without a change published")
	default:
	}
	if s := f.w.Status(); s.Files != "consistent" || s.Published != 1 {
		t.Errorf("status %+v", s)
	}
	if !strings.Contains(f.log.String(), "spiffe=spiffe://cluster.local/ns/default/sa/productpage") {
		t.Errorf("the log does not name the identity published:\n%s", f.log)
	}
}

// A rotation as istio-agent writes it (key, chain, root, each by a rename), polled
// after every single write: the old identity stays in force until the set is whole,
// no problem is reported, and the new one follows.
func TestRotationPolledBetweenWrites(t *testing.T) {
	f := newFixture(t)
	old := f.start()

	next := f.issue(identitytest.Options{})
	f.write(identity.KeyFile, next.Key)
	st := f.state()
	f.wantIdentity(st, old)
	if st.Problem != "" {
		t.Errorf("a rotation half-way is reported at once: %q", st.Problem)
	}
	f.write(identity.ChainFile, next.Chain)
	f.wantIdentity(f.state(), next)
	f.write(identity.RootFile, next.Root) // the same root, written again
	st = f.state()
	f.wantIdentity(st, next)
	if st.Problem != "" || strings.Contains(f.log.String(), "level=WARN") {
		t.Errorf("a rotation gave problem %q or warnings:\n%s", st.Problem, f.log)
	}
	if s := f.w.Status(); s.Published != 2 {
		t.Errorf("published %d identities, want 2", s.Published)
	}
}

// A key that stays mismatched (the writer stopped half-way) is reported at the next
// poll, without key material, while the last good identity stays; the complete set
// clears it.
func TestMismatchedKeyReportedAndLastGoodKept(t *testing.T) {
	f := newFixture(t)
	old := f.start()

	next := f.issue(identitytest.Options{})
	f.write(identity.KeyFile, next.Key)
	f.state()
	st := f.state()
	f.wantIdentity(st, old)
	if !strings.Contains(st.Problem, "key.pem does not hold the private key of the certificate in cert-chain.pem") {
		t.Fatalf("problem %q, want the mismatch", st.Problem)
	}
	if s := f.w.Status(); s.Files != "inconsistent" {
		t.Errorf("status files %q", s.Files)
	}
	_, changed := f.w.Current()
	f.state()
	select {
	case <-changed:
		t.Error("the same problem was published again")
	default:
	}
	if n := strings.Count(f.log.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings for one lasting problem, want 1:\n%s", n, f.log)
	}

	f.write(identity.ChainFile, next.Chain)
	st = f.state()
	f.wantIdentity(st, next)
	if st.Problem != "" {
		t.Errorf("problem %q after the set was completed", st.Problem)
	}
}

// A mismatched pair before any identity: nothing is published but the problem.
func TestMismatchedKeyFirst(t *testing.T) {
	f := newFixture(t)
	a, b := f.issue(identitytest.Options{}), f.issue(identitytest.Options{})
	f.writeAll(identitytest.Files{Key: b.Key, Chain: a.Chain, Root: a.Root})
	f.state()
	if st := f.state(); st.Identity != nil || !strings.Contains(st.Problem, "does not hold the private key") {
		t.Fatalf("state %+v", st)
	}
}

// root-cert.pem missing, or holding another mesh's root: reported, the last good
// identity stays.
func TestMissingOrForeignRoot(t *testing.T) {
	f := newFixture(t)
	files := f.start()

	if err := os.Remove(filepath.Join(f.dir, identity.RootFile)); err != nil {
		t.Fatal(err)
	}
	f.state()
	st := f.state()
	f.wantIdentity(st, files)
	if !strings.Contains(st.Problem, "[root-cert.pem] missing") {
		t.Fatalf("problem %q, want the missing root named", st.Problem)
	}

	other, err := identitytest.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	f.write(identity.RootFile, other.PEM)
	f.state()
	st = f.state()
	f.wantIdentity(st, files)
	if !strings.Contains(st.Problem, "does not verify against root-cert.pem") {
		t.Fatalf("problem %q, want the chain not verifying", st.Problem)
	}
}

// The directory deleted: the identity in force stays (said once), without a
// problem; files written again are followed.
func TestDeletedDirectory(t *testing.T) {
	f := newFixture(t)
	files := f.start()

	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		st := f.state()
		f.wantIdentity(st, files)
		if st.Problem != "" {
			t.Fatalf("problem %q for absent files", st.Problem)
		}
	}
	if n := strings.Count(f.log.String(), "files gone"); n != 1 {
		t.Errorf("the deletion is logged %d times, want once:\n%s", n, f.log)
	}
	if s := f.w.Status(); s.Files != "absent" {
		t.Errorf("status files %q", s.Files)
	}
	f.start() // files written again are followed
}

// Validity follows the clock without any write: a certificate not yet valid is
// published once it is; the identity in force is reported once it expires.
func TestValidityFollowsTheClock(t *testing.T) {
	f := newFixture(t)
	start := f.now
	files := f.issue(identitytest.Options{NotBefore: start.Add(time.Minute), NotAfter: start.Add(time.Hour)})
	f.writeAll(files)
	f.state()
	if st := f.state(); st.Identity != nil || !strings.Contains(st.Problem, "is valid from") {
		t.Fatalf("state before the certificate is valid: %+v", st)
	}
	f.now = start.Add(2 * time.Minute)
	st := f.state()
	f.wantIdentity(st, files)
	if st.Problem != "" {
		t.Errorf("problem %q once valid", st.Problem)
	}
	f.now = start.Add(2 * time.Hour)
	st = f.state()
	f.wantIdentity(st, files)
	if !strings.Contains(st.Problem, "expired at") {
		t.Errorf("problem %q after expiry, want the expiry", st.Problem)
	}
}

// Run polls on its own: a rotation reaches Current without any call from the test.
func TestRunFollowsRotation(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a, err := ca.Issue(identitytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Write(dir); err != nil {
		t.Fatal(err)
	}
	w := New(Options{Dir: dir, Interval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	wait := func(serial string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			st, changed := w.Current()
			if st.Identity != nil && st.Identity.Serial == serial {
				return
			}
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("identity %s not published", serial)
			}
		}
	}
	wait(a.Serial)
	b, err := ca.Issue(identitytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(dir); err != nil {
		t.Fatal(err)
	}
	wait(b.Serial)
}
