package shdict

import (
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// The change journal lives in the version dict next to VersionKey, so that a reader
// (amesh's Lua config provider) re-reads only what changed instead of every key of
// every kind. APISIX's stock provider reads only VersionKey and ignores the rest.
//
//   - JournalPrefix + <version>: the keys put or deleted by the batch that made that
//     version visible, one per line, sorted. A line "*" stands for every key of every
//     kind (the first batch of a Sink, which replaces the whole dict); a line "*/<kind>"
//     for every key of that kind (a batch too large to list). Versions within one Sink
//     are consecutive, so a reader at version w needs the entries w+1 … current; a
//     missing one (trimmed, or a new Sink, whose first version jumps) means the reader
//     fell behind the journal.
//   - KindVersionPrefix + "/<kind>": the last version that changed a key of that kind.
//     A reader that fell behind re-reads only the kinds changed since its version; a
//     kind without this key is re-read.
//
// Every key a batch wrote is in its entry, including keys written by earlier attempts
// that failed (they were visible to no one, but the dict holds their new values).
// Entries are written before VersionKey, so a reader that sees a version finds its
// entry; they are trimmed oldest first to a byte budget (a quarter of the dict) and a
// count.
const (
	JournalPrefix     = "journal:"
	KindVersionPrefix = "version:"
	// journalAll and journalKindPrefix are the lines that stand for many keys.
	journalAll        = "*"
	journalKindPrefix = "*"
)

// Journal limits. maxJournalEntries bounds the entries kept whatever their size: at
// one batch per coalescing window (20 ms) it covers tens of seconds of a reader not
// polling. A batch whose entry would take more than budget/maxEntryShare bytes is
// journaled by kind.
const (
	maxJournalEntries = 1024
	maxEntryShare     = 16
	// defaultVersionCapacity is assumed when the module does not report the dict's
	// size (APISIX's default for xds-config-version).
	defaultVersionCapacity = 1 << 20
)

// journal is the Sink's side of the change journal. It is used under Sink.mu.
type journal struct {
	budget int // bytes of keys and values the entries may take
	// written are the entries this Sink wrote that are still in the dict, oldest
	// first, and used their total size.
	written []journalEntry
	used    int
	// pending are the keys written since the last version bump (by this batch and by
	// failed attempts before it); full means the dict was flushed since then.
	pending map[string]struct{}
	full    bool
}

type journalEntry struct {
	version uint64
	size    int
}

func newJournal(capacity int) journal {
	if capacity <= 0 {
		capacity = defaultVersionCapacity
	}
	return journal{budget: capacity / 4, pending: map[string]struct{}{}}
}

// touch records keys about to be written (before any is).
func (j *journal) touch(puts, deletes []string) {
	for _, k := range puts {
		j.pending[k] = struct{}{}
	}
	for _, k := range deletes {
		j.pending[k] = struct{}{}
	}
}

// entry returns the journal entry for the pending keys and the kinds they touch.
func (j *journal) entry() (text string, kinds []string) {
	seen := map[string]bool{}
	keys := make([]string, 0, len(j.pending))
	size := 0
	for k := range j.pending {
		keys = append(keys, k)
		size += len(k) + 1
		if kind := kindPrefix(k); !seen[kind] {
			seen[kind] = true
			kinds = append(kinds, kind)
		}
	}
	sort.Strings(kinds)
	if j.full {
		return journalAll, kinds
	}
	if size > j.budget/maxEntryShare {
		lines := make([]string, len(kinds))
		for i, k := range kinds {
			lines[i] = journalKindPrefix + k
		}
		return strings.Join(lines, "\n"), kinds
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n"), kinds
}

// kindPrefix is "/<kind>" of a key "/<kind>/<id>" (the key itself if it has no id),
// the prefix APISIX's config objects are named by.
func kindPrefix(key string) string {
	if i := strings.IndexByte(key[min(1, len(key)):], '/'); i >= 0 {
		return key[:i+1]
	}
	return key
}

// write stores the kind versions and the entry of version next into d, before next is
// made visible. Nothing here fails the batch: a kind version that cannot be stored is
// deleted (a reader then re-reads that kind), and so is an entry (a reader re-reads
// the kinds changed since its version). prev is the version the dict held before this
// Sink's first batch (0 if none), whose journal a first batch removes.
func (j *journal) write(d dict, next, prev uint64) {
	text, kinds := j.entry()
	if j.full {
		j.dropPrevious(d, prev)
		// The dict was flushed: every kind changed, including those no key is left of.
		for _, k := range apisix.KindOrder {
			if k := "/" + string(k); !slices.Contains(kinds, k) {
				kinds = append(kinds, k)
			}
		}
		sort.Strings(kinds)
	}
	ver := []byte(strconv.FormatUint(next, 10))
	for _, k := range kinds {
		if _, err := d.set(KindVersionPrefix+k, ver, false); err != nil {
			j.trim(d, j.budget)
			if _, err := d.set(KindVersionPrefix+k, ver, false); err != nil {
				_ = d.delete(KindVersionPrefix + k)
			}
		}
	}
	key := JournalPrefix + strconv.FormatUint(next, 10)
	size := len(key) + len(text)
	if size > j.budget {
		_ = d.delete(key)
		return
	}
	j.trim(d, size)
	if _, err := d.set(key, []byte(text), false); err != nil {
		// The dict is fuller than the budget assumes: make room by dropping every
		// older entry (readers that need them re-read by kind).
		j.trim(d, j.budget)
		if _, err := d.set(key, []byte(text), false); err != nil {
			_ = d.delete(key)
			return
		}
	}
	// A failed version write is retried with the same number: replace, not add.
	if n := len(j.written); n > 0 && j.written[n-1].version == next {
		j.used -= j.written[n-1].size
		j.written = j.written[:n-1]
	}
	j.written = append(j.written, journalEntry{version: next, size: size})
	j.used += size
}

// committed records that the version the entry was written for is now visible.
func (j *journal) committed() {
	clear(j.pending)
	j.full = false
}

// trim deletes the oldest entries until room more bytes and one more entry fit the
// limits.
func (j *journal) trim(d dict, room int) {
	n := 0
	for n < len(j.written) && (j.used+room > j.budget || len(j.written)-n+1 > maxJournalEntries) {
		e := j.written[n]
		_ = d.delete(JournalPrefix + strconv.FormatUint(e.version, 10))
		j.used -= e.size
		n++
	}
	j.written = j.written[n:]
}

// dropPrevious deletes the entries a previous Sink left (versions prev, prev-1, … as
// long as they exist), which would otherwise take room until the dict is recreated.
func (j *journal) dropPrevious(d dict, prev uint64) {
	for v, n := prev, 0; v > 0 && n < maxJournalEntries; v, n = v-1, n+1 {
		key := JournalPrefix + strconv.FormatUint(v, 10)
		if _, ok, err := d.getString(key); err != nil || !ok {
			return
		}
		_ = d.delete(key)
	}
}
